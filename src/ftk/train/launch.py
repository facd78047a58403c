"""Launch commands as visible argument lists, and the one place that starts a subprocess."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

LAUNCHER_MODULE = "llamafactory.launcher"


def build_train_argv(config_path: str, *, nnodes: int = 1, nproc_per_node: int = 1, node_rank: int = 0,
                     master_addr: str = "127.0.0.1", master_port: int = 29500,
                     force_torchrun: bool = False, module: str = LAUNCHER_MODULE) -> list[str]:
    """The training command (LLaMA-Factory's launcher, or `module`: ftk's own trainer).

    One process: `python -m llamafactory.launcher CFG` (unless `force_torchrun`: DeepSpeed needs a
    torchrun launch even on one device). Several: torchrun with a static rendezvous; each node runs
    the same command with its own `--node-rank`.

    >>> build_train_argv("run/llamafactory.yaml")
    ['python', '-m', 'llamafactory.launcher', 'run/llamafactory.yaml']
    """
    if nnodes == 1 and nproc_per_node == 1 and not force_torchrun:
        return ["python", "-m", module, config_path]
    return [
        "torchrun",
        "--nnodes", str(nnodes),
        "--node-rank", str(node_rank),
        "--nproc-per-node", str(nproc_per_node),
        "--master-addr", master_addr,
        "--master-port", str(master_port),
        "-m", module,
        config_path,
    ]


def build_slurm_argv(config_path: str, *, nnodes: int, nproc_per_node: int, rdzv_port: int = 29500,
                     module: str = LAUNCHER_MODULE) -> list[str]:
    """What each SLURM node runs under srun: torchrun with a c10d rendezvous on the first node.

    `$MASTER_ADDR` and `$SLURM_JOB_ID` are expanded by the batch script's shell.
    """
    return [
        "torchrun",
        "--nnodes", str(nnodes),
        "--nproc-per-node", str(nproc_per_node),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"$MASTER_ADDR:{rdzv_port}",
        "--rdzv-id", "$SLURM_JOB_ID",
        "-m", module,
        config_path,
    ]


def shell_quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


# the variables ftk itself writes into a batch script's command lines, to be expanded by the job
JOB_VARIABLES = {"MASTER_ADDR", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID"}


def shell_quote_expanding(argv: Sequence[str]) -> str:
    """Like shell_quote, but an argument whose every `$VAR` is one of ftk's own job variables
    (JOB_VARIABLES) is double-quoted so the job's shell expands it; any other `$` (a path such as
    /scratch/$USER from a recipe) stays literal."""
    out = []
    for a in argv:
        names = re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", a)
        if names and set(names) <= JOB_VARIABLES and all(c.isalnum() or c in "$_:./-" for c in a):
            out.append(f'"{a}"')
        else:
            out.append(shlex.quote(a))
    return " ".join(out)


def launch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child: this interpreter's bin dir first, so `python`/`torchrun` are ours."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # ftk's own argv decides about torchrun; stop LLaMA-Factory from re-launching itself.
    env.pop("FORCE_TORCHRUN", None)
    env.update(extra or {})
    return env


def resolve(argv: Sequence[str]) -> list[str]:
    """Replace a bare `python` with this interpreter (the venv's), keep the rest as given."""
    argv = list(argv)
    if argv and argv[0] == "python":
        argv[0] = sys.executable
    return argv


def run_streaming(argv: Sequence[str], log_path: Path, *, cwd: str | Path | None = None,
                  env: dict[str, str] | None = None) -> int:
    """Run argv (no shell), stream its output to the terminal and to log_path; return the exit code."""
    env = env or launch_env()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(resolve(argv), cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, bufsize=0, start_new_session=False)
        assert proc.stdout is not None
        try:
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, 65536):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                log.write(chunk)
                log.flush()
        except BaseException:
            _stop(proc)
            raise
        return proc.wait()


def run_logged(argv: Sequence[str], log_path: Path, *, cwd: str | Path | None = None,
               env: dict[str, str] | None = None, on_tick=None, tick_seconds: float = 0.5) -> int:
    """Run argv (no shell) with all its output going to log_path only; call on_tick() while it runs.

    Returns the exit code. Interrupted (Ctrl-C) or failing here, the child is stopped too.
    """
    env = env or launch_env()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(resolve(argv), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            while proc.poll() is None:
                if on_tick:
                    on_tick()
                time.sleep(tick_seconds)
        except BaseException:
            _stop(proc)
            raise
        return proc.returncode


def _stop(proc: subprocess.Popen) -> None:
    """Never leave a trainer running behind us (it would hold GPUs and the rendezvous port)."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
