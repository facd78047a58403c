"""`ftk train --slurm`: an sbatch script in the run directory, submitted when sbatch exists.

One task per node; srun starts torchrun on every node, which meet at a c10d rendezvous on the
first node of the allocation. Stages of a chain run one after another in the same job.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ftk.errors import FtkError
from ftk.train import launch

SBATCH_NAME = "sbatch.sh"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe(value, key: str) -> str:
    """A value for sbatch.sh: no newline or other control character (it would start a new shell
    line), then shell-quoted (a plain word stays as it is)."""
    value = str(value)
    if _CONTROL.search(value):
        raise FtkError(f"{value!r} holds a newline or control character, which cannot go into sbatch.sh",
                       where=key)
    return shlex.quote(value)


def sbatch_header(name: str, d, output: str, output_key: str, *, array: int | None = None) -> list[str]:
    """The #SBATCH lines of a run or a study's job array (`array`: its number of tasks), every value
    checked and quoted."""
    s = d.slurm
    lines = ["#!/bin/bash", f"#SBATCH --job-name={safe(name, 'name')}"]
    if array is not None:
        lines.append(f"#SBATCH --array=0-{array - 1}")
    gpus = d.nproc_per_node if s.gpus_per_node is None else s.gpus_per_node
    lines += [f"#SBATCH --nodes={int(d.nnodes)}", "#SBATCH --ntasks-per-node=1"]
    if gpus:  # 0: a CPU partition, where asking for GPUs is refused ("Invalid generic resource")
        lines.append(f"#SBATCH --gpus-per-node={int(gpus)}")
    if s.cpus_per_task:  # unset: the partition's default, so a smaller node can still take the job
        lines.append(f"#SBATCH --cpus-per-task={int(s.cpus_per_task)}")
    lines.append(f"#SBATCH --output={safe(output, output_key)}")
    for key, value in (("partition", s.partition), ("account", s.account), ("time", s.time)):
        if value:
            lines.append(f"#SBATCH --{key}={safe(value, f'distributed.slurm.{key}')}")
    return lines + [f"#SBATCH {safe(opt, 'distributed.slurm.extra_sbatch')}" for opt in s.extra_sbatch]


def render_sbatch(recipe, plans, run_dir: Path, *, python: str | None = None, workdir: str | None = None) -> str:
    """The batch script: every recipe value is checked (recipe.py's patterns, then `safe`) and quoted."""
    d = recipe.distributed
    lines = sbatch_header(recipe.name, d, f"{run_dir}/slurm-%j.out", "runs_dir")
    bindir = str(Path(python or sys.executable).parent)
    lines += [
        "",
        "set -euo pipefail",
        f"cd {safe(workdir or str(Path.cwd()), 'working directory')}",
        f"export PATH={safe(bindir, 'python')}:$PATH",
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export PYTHONWARNINGS=ignore::FutureWarning",
        "",
        "# the job records its own state in manifest.json (running, then finished or failed with its code)",
        f"ftk_job_ended() {{ python -m ftk.train.jobstate ended {safe(str(run_dir), 'runs_dir')} \"$1\"; }}",
        "trap 'ftk_job_ended $?' EXIT",
        "trap 'exit 143' TERM",
        f"python -m ftk.train.jobstate started {safe(str(run_dir), 'runs_dir')} $$",
    ]
    for p in plans:
        argv = launch.build_slurm_argv(str(p.dir / p.config_name), nnodes=d.nnodes, nproc_per_node=d.nproc_per_node,
                                       rdzv_port=int(d.master_port), module=p.argv[p.argv.index("-m") + 1])
        for a in argv:
            safe(a, "runs_dir")
        lines += ["", f"# stage {safe(p.name, 'stages.name')}", "srun " + launch.shell_quote_expanding(argv)]
    return "\n".join(lines) + "\n"


def write_sbatch(recipe, plans, run_dir: Path) -> Path:
    path = run_dir / SBATCH_NAME
    path.write_text(render_sbatch(recipe, plans, run_dir), encoding="utf-8")
    path.chmod(0o755)
    return path


def submit(script: Path) -> str | None:
    """Submit with sbatch when it exists and return the job id; otherwise say how to submit it."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        print(f"[ftk] sbatch not found; submit on the cluster with: sbatch {script}")
        return None
    proc = subprocess.run([sbatch, "--parsable", str(script)], check=False, capture_output=True, text=True)
    job = proc.stdout.strip().split(";")[0]
    if proc.returncode != 0 or not job:
        raise FtkError(f"sbatch failed: {(proc.stderr or proc.stdout).strip() or f'exit code {proc.returncode}'}",
                       path=script)
    print(f"[ftk] submitted batch job {job}", flush=True)
    return job
