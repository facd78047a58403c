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
from ftk.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, FtkError
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
    from ftk.train.run import TrainingFailed

    try:
        run_demo(str(recipe))
    except TrainingFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.code or 1) from None


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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Misuse (unknown option, bad value) and user errors are one `error:` line on
    stderr with exit code 2; `--help` and the commands' own exit codes pass through."""
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
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except (RuntimeError, OSError) as exc:
        problem = path_problem(exc)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    if type(code) is int and code != 0:  # a command's own return value is None
        if code == EXIT_INTERRUPTED:
            print("error: interrupted", file=sys.stderr)
        sys.exit(code)


if __name__ == "__main__":
    main()
