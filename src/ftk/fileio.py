"""Atomic file writing and hashing.

Outputs are written to a temporary file in the destination folder and renamed into place, so a
crash or a validation error never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temp file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the user's umask decides, as for open()
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding, newline=None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write pretty, key-sorted JSON atomically (deterministic bytes for the same object)."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2, sort_keys=True)
        fh.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def iter_jsonl(path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> Iterator[tuple[int, Any, str | None]]:
    """(line number, object, problem) for each non-blank line; problem is None for a JSON object."""
    with open(path, encoding=encoding, errors=errors) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, None, f"not valid JSON ({exc.msg})"
                continue
            yield lineno, obj, None if isinstance(obj, dict) else "expected a JSON object per line"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask_modes(root: Path) -> None:
    """Give what a library wrote under `root` the modes open() and mkdir() would (the user's umask):
    some writers (safetensors, mkstemp) make 0600 files that other users of a shared model folder
    could not read."""
    mask = _umask()
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o777 & ~mask)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                executable = os.stat(p).st_mode & 0o100
                os.chmod(p, (0o777 if executable else 0o666) & ~mask)


@contextlib.contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place on success.

    If `final` already exists its files are replaced one by one only after the whole stage
    succeeded; on failure the stage is removed and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield stage
        _umask_modes(stage)
        final.mkdir(parents=True, exist_ok=True)
        for item in stage.iterdir():
            os.replace(item, final / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def fault_point(name: str) -> None:
    """Crash-test hook: with FTK_KILL_AT=<name> in the environment this process kills itself here
    with SIGKILL, exactly as `kill -9` would (tests use it to prove outputs stay whole); with
    FTK_PAUSE_AT=<name>:<seconds> it sleeps here (tests use it to make a race happen every time)."""
    if os.environ.get("FTK_KILL_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    where, _, seconds = os.environ.get("FTK_PAUSE_AT", "").rpartition(":")
    if where == name:
        import time

        time.sleep(float(seconds))


_HELD: dict[str, int] = {}


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` for the block: an flock on `.<name>.lock` beside it, removed
    again on the way out. Two ftk processes writing one folder (prepares started together, a SLURM
    array's tasks sharing the data and the tiny model) take turns instead of removing each other's
    work. Re-entrant within a process. (A waiter that wakes on a lock file its holder already removed
    takes the new one, the usual protocol for removable lock files.)"""
    import fcntl
    import sys

    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.lock"
    said = False
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:
                print(f"[ftk] waiting: another ftk process is writing {folder}", file=sys.stderr, flush=True)
                said = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed that file: lock the current one
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def fds_to(path: str | Path, mode: str = "ab") -> Iterator[None]:
    """Point this process's file descriptors 1 and 2 (so libraries' own handlers and progress bars
    too, not just sys.stdout) at `path` for the block, then back."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    # sys.stdout / sys.stderr too: a caller may have replaced them with objects that are not fds 1 and 2
    # (an embedding program, a test harness), and tqdm bars write to the object
    with open(path, mode) as fh, open(path, "a", encoding="utf-8", errors="replace", buffering=1) as text, \
            contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def output_to(log: str | Path) -> Iterator[None]:
    """Send stdout and stderr (`fds_to`) to `log` for the block; on an error, its tail is printed
    on the restored terminal before raising."""
    import sys

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    try:
        with fds_to(log):
            yield
    except BaseException:
        print("".join(Path(log).read_text(encoding="utf-8", errors="replace").splitlines(True)[-30:]),
              file=sys.stderr)
        raise


class _AcceleratorNotes(logging.Filter):
    """DeepSpeed's notes on choosing its accelerator ("Setting accelerator to CPU. If you have GPU ...",
    "Setting ds_accelerator to cpu (auto detect)"), logged on import whenever transformers or peft
    touches DeepSpeed; ftk's own processes (eval, tiny-model) never train with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.replace("\\", "/").endswith("accelerator/real_accelerator.py")


def quiet_accelerator_notes() -> None:
    """Keep DeepSpeed's accelerator notes off ftk's terminal (its other messages pass); idempotent.
    Trainings run in their own processes and log there as usual."""
    logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _AcceleratorNotes) for f in logger.filters):
        logger.addFilter(_AcceleratorNotes())


@contextlib.contextmanager
def no_library_bars() -> Iterator[None]:
    """Keep transformers' own progress bars ("Loading weights") off ftk's terminal for the block."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()


def read_json(path: str | Path, *, what: str = "JSON file", required: tuple[str, ...] = ()) -> dict:
    """A JSON object from `path`, or FtkError in one line naming the file: missing, unreadable, not
    JSON, not an object, or without one of the `required` keys. For files ftk wrote that may have
    been damaged or edited since (trial states, metrics, manifests)."""
    from ftk.errors import FtkError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FtkError(f"{what} is missing", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FtkError(f"cannot read {what} ({getattr(exc, 'strerror', None) or type(exc).__name__})",
                       path=path) from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise FtkError(f"{what} is not valid JSON ({exc}); damaged or cut short", path=path) from None
    if not isinstance(obj, dict):
        raise FtkError(f"{what} must hold a JSON object, not {type(obj).__name__}", path=path)
    for key in required:
        if key not in obj:
            raise FtkError(f"{what} lacks the key `{key}` (damaged or edited by hand)", path=path, where=key)
    return obj
