"""Trainings launched from the test process without paying for their imports each time.

`ftk train` starts every stage as a child process (`python -m llamafactory.launcher CFG`, `python -m
ftk.train.hf.entry CFG`, `llamafactory-cli export CFG`). Importing LLaMA-Factory takes ~10 s on this
machine, and a suite runs dozens of trainings. Here the same child runs, as its own process, forked from
one server that imported LLaMA-Factory, transformers and peft once (Python's multiprocessing
"forkserver", which never runs torch itself, so no thread pool is forked): a fresh process with its own
environment, working directory, argv, log and exit code, only without the import.

Used for the commands that tests run in-process (`ftk_here`). What a real process must show (exit codes
of the installed script, kill -9, Ctrl-C, torchrun / DeepSpeed, SLURM) runs through `run_ftk` and
never comes here; an argv this module does not know runs as a plain subprocess.
`FTK_TEST_FORKLAUNCH=0` turns it off (every training a plain subprocess, as in the product).
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
import time
from pathlib import Path

PRELOAD = ["llamafactory.launcher", "llamafactory.train.tuner", "llamafactory.cli", "transformers", "peft",
           "ftk.train.hf.entry"]
_ctx = None


def enabled() -> bool:
    return os.environ.get("FTK_TEST_FORKLAUNCH", "1") != "0"


def _target(argv: list[str]) -> tuple[str, str, list[str]] | None:
    """(how, what, args) for an argv this module can run in a forked child, else None."""
    if len(argv) >= 3 and Path(argv[0]).name.startswith("python") and argv[1] == "-m":
        return "module", argv[2], argv[3:]
    if argv and Path(argv[0]).name == "llamafactory-cli":
        return "function", "llamafactory.cli:main", argv[1:]
    return None


def _context():
    global _ctx
    if _ctx is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        # read once, at import: the level ftk gives its trainers (train.log holds the whole output)
        os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "INFO")
        _ctx = ctx
    return _ctx


def _child(target: tuple[str, str, list[str]], argv0: str, cwd: str | None, env: dict[str, str],
           log_path: str) -> None:
    """In the forked child: become the process the argv describes, its output going to log_path."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    how, what, args = target
    if how == "module":
        sys.argv = [what, *args]
        runpy.run_module(what, run_name="__main__", alter_sys=True)
    else:
        module, func = what.split(":")
        sys.argv = [argv0, *args]
        result = getattr(__import__(module, fromlist=[func]), func)()
        if isinstance(result, int):
            sys.exit(result)


def run(argv: list[str], log_path: Path, *, cwd, env: dict[str, str], on_tick=None, echo: bool = False,
        tick_seconds: float = 0.5) -> int | None:
    """Run argv in a forked child; its exit code, or None when argv is not one this module runs."""
    target = _target(argv) if enabled() else None
    if target is None:
        return None
    log_path = Path(log_path)
    log_path.touch()
    shown = log_path.stat().st_size  # what is already there was shown before this command
    proc = _context().Process(target=_child, args=(target, argv[0], str(cwd) if cwd else None, dict(env),
                                                   str(log_path)))
    proc.start()
    try:
        while proc.is_alive():
            if on_tick:
                on_tick()
            if echo:
                shown = _echo(log_path, shown)
            time.sleep(tick_seconds)
    except BaseException:
        proc.terminate()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        raise
    proc.join()
    if echo:
        _echo(log_path, shown)
    return proc.exitcode  # killed by a signal: minus its number, as Popen says


def _echo(log_path: Path, shown: int) -> int:
    with open(log_path, "rb") as f:
        f.seek(shown)
        chunk = f.read()
    if chunk:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    return shown + len(chunk)
