"""`ftk` entry point: registers every command module on the app, runs it, and turns a user error
(`FtkError`) into one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ftk.cli.app import app

# Each module registers its commands on import; this order is the order of `ftk --help`.
# isort: off
from ftk.cli import data_cmds  # noqa: F401
from ftk.cli import train_cmds  # noqa: F401
from ftk.cli import eval_cmds  # noqa: F401
# isort: on
from ftk.errors import EXIT_USER_ERROR, FtkError


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
        raise typer.Exit(1) from None


def main() -> None:
    try:
        app()
    except FtkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
