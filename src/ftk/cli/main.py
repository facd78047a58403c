"""`ftk` entry point: registers every command module on the app, runs it, and turns a user error
(`FtkError`) into one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ftk.cli.app import app

# Each module registers its commands on import; this order is the order of `ftk --help`.
# isort: off
from ftk.cli import model_cmds  # noqa: F401
from ftk.cli import data_cmds  # noqa: F401
from ftk.cli import train_cmds  # noqa: F401
from ftk.cli import eval_cmds  # noqa: F401
from ftk.cli import study_cmds  # noqa: F401
# isort: on
from ftk.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    FtkError,
    Terminated,
    TrainingFailed,
    interrupt_code,
)
from ftk.fileio import quiet_accelerator_notes


@app.command("demo")
def demo_cmd(
    recipe: Annotated[Path, typer.Option(help="recipe to run")] = Path("configs/agnews_tiny_cpu.yaml"),
) -> None:
    """Offline end to end: synthetic AG News -> tiny model -> prepare -> train -> eval.

    Examples:\n
      ftk demo\n
      make demo
    """
    from ftk.demo import run_demo

    run_demo(str(recipe))  # a failed training: main() prints it and exits with the trainer's code


def symlink_loop(exc: BaseException) -> str | None:
    """The path of a symlink loop that `exc` reports (pathlib's RuntimeError on resolve, ELOOP from
    the OS), else None: one root cause behind any --out, prepared or runs folder that loops."""
    import errno

    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop from "):
        return str(exc).removeprefix("Symlink loop from ").strip("'\"")
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return exc.filename or "a path"
    if isinstance(exc, OSError) and exc.filename:  # e.g. mkdir(exist_ok=True) on a loop: "File exists"
        try:
            os.stat(exc.filename)
        except OSError as inner:
            if inner.errno == errno.ELOOP:
                return str(exc.filename)
    return None


def path_problem(exc: BaseException) -> str | None:
    """One line for an output path that cannot be a folder (a symlink loop, an existing file where a
    folder is to be made), else None."""
    loop = symlink_loop(exc)
    if loop is not None:
        return f"{loop}: a symlink loop (the path leads back to itself); give a real folder"
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and exc.filename:
        wanted = Path(exc.filename)
        for path in (wanted, *wanted.parents):  # the file that stands where a folder is needed
            if path.exists() and not path.is_dir():
                inside = "" if path == wanted else f" (needed for {wanted})"
                return f"{path}: exists and is not a folder{inside}; give a folder path"
    return None


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def unexpected(exc: BaseException) -> str:
    """One line for an error ftk did not foresee (a bug, or a library's failure): its type and first
    line, and where the whole traceback went (a file, so the terminal stays one line)."""
    import tempfile
    import traceback

    first = (str(exc).strip().splitlines() or [""])[0][:300]
    try:
        fd, path = tempfile.mkstemp(prefix="ftk-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(traceback.format_exception(exc)))
        where = f"traceback in {path}"
    except OSError:
        where = "set FTK_DEBUG=1 for the traceback"
    return f"unexpected {type(exc).__name__}: {first} ({where}; FTK_DEBUG=1 shows it here)"


def os_problem(exc: OSError) -> tuple[str, int] | None:
    """(line, exit code) for an OS error on a named path: a path the user gave that cannot be read or
    written is their input (2); a full disk or another OS failure is not (1)."""
    import errno

    if not exc.filename:
        return None
    reason = (exc.strerror or type(exc).__name__).lower()
    path = Path(str(exc.filename))
    if path.name.startswith(".") and path.parent != path:  # ftk's staging or lock name beside an output
        path, reason = path.parent, f"cannot write in this folder ({reason})"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
        return f"{path}: {reason} (expected a path ftk may read and write)", EXIT_USER_ERROR
    return f"{path}: {reason}", 1


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Misuse (unknown option, bad value) and user errors are one `error:` line on
    stderr with exit code 2; a failed training exits with the trainer's code; Ctrl-C exits 130 and
    SIGTERM 143, after ftk's children were stopped; anything unforeseen is one line and exit 1 (the
    traceback goes to a file, or to the terminal with FTK_DEBUG=1). No traceback reaches the user."""
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> None:
    try:  # typer >= 0.20 vendors click as typer._click; older typer uses click itself
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx
    quiet_accelerator_notes()
    command = typer.main.get_command(app)
    try:
        # Not standalone, click RETURNS the code of a `typer.Exit` (a failed trainer's, 130 for Ctrl-C,
        # which typer turns into Exit(130)) instead of exiting: pass it on, or every failure exits 0.
        code = command.main(args=argv, prog_name="ftk", standalone_mode=False)
    except FtkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except TrainingFailed as exc:  # train, demo, a study's trial, export: the trainer's own exit code
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.code or 1)
    except cx.NoArgsIsHelpError as exc:  # bare `ftk` or `ftk tasks`: the help, as standalone click does
        exc.show()
        sys.exit(0)
    except cx.UsageError as exc:
        where = f"ftk {exc.ctx.info_name}: " if exc.ctx is not None and exc.ctx.parent is not None else ""
        print(f"error: {where}{exc.format_message()} (see --help)".replace("\n", " "), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except (typer.Exit, cx.ClickException) as exc:  # Exit: a command's own exit code
        code = getattr(exc, "exit_code", 1)
        if isinstance(exc, cx.ClickException):
            print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(code)
    except typer.Abort as exc:  # click's form of KeyboardInterrupt (and of Terminated, its cause)
        code = interrupt_code(exc.__cause__) if exc.__cause__ is not None else EXIT_INTERRUPTED
        print(f"error: {'terminated' if code == EXIT_TERMINATED else 'interrupted'}", file=sys.stderr)
        sys.exit(code)
    except KeyboardInterrupt as exc:
        code = interrupt_code(exc)
    except (RuntimeError, OSError) as exc:
        problem, status = path_problem(exc), EXIT_USER_ERROR
        if problem is None and isinstance(exc, OSError):
            problem, status = os_problem(exc) or (None, 1)
        if problem is None:
            _unforeseen(exc)
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(status)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        _unforeseen(exc)
    if type(code) is int and code != 0:  # a command's own return value is None
        if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            print(f"error: {'terminated' if code == EXIT_TERMINATED else 'interrupted'}", file=sys.stderr)
        sys.exit(code)


def _unforeseen(exc: BaseException) -> None:
    if os.environ.get("FTK_DEBUG"):
        raise exc
    print(f"error: {unexpected(exc)}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
