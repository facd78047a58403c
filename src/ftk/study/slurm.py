"""`ftk study run STUDY.yaml --slurm`: the trials as one SLURM job array, one trial per array task
(`ftk study run STUDY.yaml --out DIR --trial $SLURM_ARRAY_TASK_ID`); each task writes its trial's
state file, and `ftk study report DIR` builds the table once the array is done. Every value in the
script is checked and quoted (train/slurm.py's `safe`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ftk.errors import FtkError
from ftk.fileio import write_json, write_text
from ftk.recipe import load_recipe
from ftk.train.launch import shell_quote_expanding
from ftk.train.slurm import safe, sbatch_header, submit

SCRIPT = "study.sbatch"


def render_array(spec, study_file: Path, recipe_path: Path, trials: list, sdir: Path, *,
                 python: str | None = None, workdir: str | None = None) -> str:
    r = load_recipe(recipe_path, spec.overrides)
    d = r.distributed
    if d.nnodes != 1:
        raise FtkError("a study's trials run one node each (`distributed.nnodes` 1) in a SLURM job array",
                       path=recipe_path, where="distributed.nnodes")
    lines = sbatch_header(spec.name, d, f"{sdir}/slurm-%A_%a.out", "out", array=len(trials))
    bindir = str(Path(python or sys.executable).parent)
    # the study folder's copy (recipe path made absolute), not the original: edits to the original
    # while the array waits in the queue cannot change what its tasks run
    argv = ["ftk", "study", "run", str(sdir / "study.yaml"), "--out", str(sdir), "--trial", "$SLURM_ARRAY_TASK_ID"]
    for a in argv[:-1]:
        safe(a, "study path")
    lines += [
        "",
        "set -euo pipefail",
        f"cd {safe(workdir or str(Path.cwd()), 'working directory')}",
        f"export PATH={safe(bindir, 'python')}:$PATH",
        "export PYTHONWARNINGS=ignore::FutureWarning",
        f"export WANDB_RUN_GROUP={safe(spec.name, 'name')}",
        "",
        "# one trial per array task: " + ", ".join(f"{i}={t.id}" for i, t in enumerate(trials)),
        shell_quote_expanding(argv),
    ]
    return "\n".join(lines) + "\n"


def submit_array(spec, study_file: Path, recipe_path: Path, trials: list, sdir: Path) -> Path:
    script = sdir / SCRIPT
    write_text(script, render_array(spec, Path(study_file), recipe_path, trials, sdir))
    script.chmod(0o755)
    if shutil.which("sbatch") is None:
        print(f"[study] {len(trials)} trials as a job array: {script}; sbatch not found; submit on the cluster "
              f"with: sbatch {script}, then: ftk study report {sdir}")
        return script
    job = submit(script)
    write_json(sdir / "slurm-job.json", {"slurm_job_id": job, "script": str(script), "trials": len(trials)})
    print(f"[study] when array job {job} is done: ftk study report {sdir}")
    return script
