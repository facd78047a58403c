"""The Typer application object that every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Config-driven fine-tuning of LLMs for text classification, on LLaMA-Factory.")
