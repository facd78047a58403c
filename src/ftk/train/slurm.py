"""`ftk train --slurm`: an sbatch script in the run directory, submitted when sbatch exists.

One task per node; srun starts torchrun on every node, which meet at a c10d rendezvous on the
first node of the allocation. Stages of a chain run one after another in the same job.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ftk.errors import FtkError
from ftk.train import launch

SBATCH_NAME = "sbatch.sh"


def render_sbatch(recipe, plans, run_dir: Path, *, python: str | None = None, workdir: str | None = None) -> str:
    d = recipe.distributed
    s = d.slurm
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={recipe.name}",
        f"#SBATCH --nodes={d.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={d.nproc_per_node}",
        f"#SBATCH --cpus-per-task={s.cpus_per_task}",
        f"#SBATCH --output={run_dir}/slurm-%j.out",
    ]
    for key, value in (("partition", s.partition), ("account", s.account), ("time", s.time)):
        if value:
            lines.append(f"#SBATCH --{key}={value}")
    lines += [f"#SBATCH {opt}" for opt in s.extra_sbatch]
    bindir = str(Path(python or sys.executable).parent)
    lines += [
        "",
        "set -euo pipefail",
        f"cd {launch.shell_quote([workdir or str(Path.cwd())])}",
        f"export PATH={launch.shell_quote([bindir])}:$PATH",
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export PYTHONWARNINGS=ignore::FutureWarning",
    ]
    for p in plans:
        argv = launch.build_slurm_argv(str(p.dir / "llamafactory.yaml"), nnodes=d.nnodes,
                                       nproc_per_node=d.nproc_per_node, rdzv_port=d.master_port)
        lines += ["", f"# stage {p.name}", "srun " + launch.shell_quote_expanding(argv)]
    return "\n".join(lines) + "\n"


def write_sbatch(recipe, plans, run_dir: Path) -> Path:
    path = run_dir / SBATCH_NAME
    path.write_text(render_sbatch(recipe, plans, run_dir), encoding="utf-8")
    path.chmod(0o755)
    return path


def submit(script: Path) -> str | None:
    """Submit with sbatch when it exists; otherwise say how to submit it."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        print(f"[ftk] sbatch not found; submit on the cluster with: sbatch {script}")
        return None
    proc = subprocess.run([sbatch, str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise FtkError(f"sbatch failed: {proc.stderr.strip()}", path=script)
    print(proc.stdout.strip())
    return proc.stdout.strip()
