"""The Typer application object that every command module registers on."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Config-driven fine-tuning of LLMs for text classification, on LLaMA-Factory.")


def _print_version(value: bool) -> None:
    if value:
        from ftk import __version__

        print(f"ftk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="print ftk's version and exit")] = False) -> None:
    """Config-driven fine-tuning of LLMs for text classification, on LLaMA-Factory."""
