"""A SLURM job's own record of its state in the run's manifest.json. `ftk train --slurm` writes the
manifest (`written`, then `submitted` with the job id); the batch script calls

    python -m ftk.train.jobstate started RUN_DIR $$        # on the node: running, host, the job's shell pid
    python -m ftk.train.jobstate ended RUN_DIR $?          # from its EXIT trap: finished or failed

so that `ftk runs` shows what the job did, not what was planned. A finished job also gets what a
local run gets after each stage: the loss plot and ftk's copy of the result files."""

from __future__ import annotations

import datetime as _dt
import os
import socket
import sys
from pathlib import Path

from ftk.train import runs


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def started(run_dir: Path, pid: int) -> None:
    manifest = runs.read_manifest(run_dir)
    info = {"host": socket.gethostname(), "pid": pid, "pid_started": None}
    try:
        import psutil

        info["pid_started"] = psutil.Process(pid).create_time()
    except Exception:  # psutil missing or the pid gone: host and pid alone
        pass
    manifest.update({"status": "running", "job_started": _now(), **info})
    if os.environ.get("SLURM_JOB_ID"):
        manifest["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    runs.write_manifest(run_dir, manifest)


def ended(run_dir: Path, code: int) -> None:
    from ftk.train.lossplot import plot_loss
    from ftk.train.screen import TRAINER_LOG

    manifest = runs.read_manifest(run_dir)
    for st in manifest.get("stages", []):
        stage_dir = Path(st["dir"])
        if (stage_dir / "model" / TRAINER_LOG).is_file():
            plot = plot_loss(stage_dir / "model" / TRAINER_LOG, stage_dir / "loss.png",
                             f"{manifest.get('name')} - stage {st['name']}")
            st["loss_plot"] = str(plot) if plot else None
        if code == 0:
            st.update({"status": "finished", "exit_code": 0, "results": runs.keep_results(stage_dir)})
    manifest.update({"status": "finished" if code == 0 else "failed", "exit_code": code, "ended": _now()})
    if manifest.get("job_started"):
        elapsed = _dt.datetime.fromisoformat(manifest["ended"]) - _dt.datetime.fromisoformat(manifest["job_started"])
        manifest["train_seconds"] = elapsed.total_seconds()
    runs.write_manifest(run_dir, manifest)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("started", "ended"):
        print("usage: python -m ftk.train.jobstate started|ended RUN_DIR PID|EXIT_CODE", file=sys.stderr)
        return 2
    what, run_dir, number = argv[0], Path(argv[1]), int(argv[2])
    started(run_dir, number) if what == "started" else ended(run_dir, number)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
