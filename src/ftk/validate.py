"""`ftk validate RECIPE`: everything that can be checked without training, reported at once.

1. the recipe schema (unknown keys, types, cross-field rules) - by load_recipe;
2. the task, its prompt version, and each local data source;
3. the rendered LLaMA-Factory config, parsed by LLaMA-Factory's own `get_train_args`;
4. what that parser does not check: the template name and the dataset names (FACTS.md).
On a machine without the recipe's hardware (bf16, DeepSpeed, flash-attention need a GPU) the
hardware-bound keys are neutralised for step 3 and the report says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ftk.data.sources import HUB_PREFIX
from ftk.data.task import load_task
from ftk.errors import FtkError
from ftk.recipe import Recipe, load_recipe

HARDWARE_KEYS = ("bf16", "fp16", "deepspeed", "flash_attn", "quantization_bit")


@dataclass
class Report:
    path: str
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def check_llamafactory(args: dict, deepspeed: dict | None, *, gpu: bool) -> tuple[list[str], list[str]]:
    """(errors, notes) from LLaMA-Factory's own parser on the rendered args."""
    import os

    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
    from llamafactory.hparams import get_train_args
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    args = dict(args)
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        if deepspeed is not None:
            ds = Path(tmp) / "deepspeed.json"
            ds.write_text(json.dumps(deepspeed))
            args["deepspeed"] = str(ds)
        args["output_dir"] = str(Path(tmp) / "out")
        if not gpu:
            skipped = [k for k in HARDWARE_KEYS if args.pop(k, None)]
            if skipped:
                notes.append(f"no GPU here: LLaMA-Factory checked the config without {', '.join(skipped)}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                get_train_args(args)
        except SystemExit as exc:
            return [f"LLaMA-Factory refused the config (exit {exc.code})"], notes
        except Exception as exc:  # its parser raises ValueError / TypeError with a message
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            keys = re.search(r"Some keys are not used by the HfArgumentParser: \[(.*)\]", str(exc))
            if keys:
                msg = f"unknown LLaMA-Factory key(s) {keys.group(1)} (check `llamafactory_args`)"
            return [f"LLaMA-Factory: {msg}"], notes
    return [], notes


def check_names(recipe: Recipe, dataset_names: list[str]) -> list[str]:
    from llamafactory.data.template import TEMPLATES

    errors = []
    if recipe.model.template not in TEMPLATES:
        import difflib

        close = difflib.get_close_matches(recipe.model.template, list(TEMPLATES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        errors.append(f"`model.template`: {recipe.model.template!r} is not a LLaMA-Factory template{hint}")
    info = Path(recipe.data.prepared_dir) / "dataset_info.json"
    if info.exists():
        registered = json.loads(info.read_text(encoding="utf-8"))
        for name in dataset_names:
            if name not in registered:
                errors.append(f"dataset {name!r} is not registered in {info} (run `ftk prepare`)")
    return errors


def validate(path: str | Path, overrides: list[str] | None = None) -> Report:
    """Validate a recipe; raise FtkError listing every problem, or return the report."""
    from ftk.train.plan import dry_run

    recipe = load_recipe(path, overrides)  # schema errors: all at once, with file and key
    report = Report(str(path))
    gpu = _has_gpu()
    for name, stage in recipe.stage_recipes():
        where = "" if name == "main" else f"stage {name}: "
        try:
            task = load_task(stage.task)
            task.prompt(stage.data.prompt_version)
        except FtkError as exc:
            report.errors.append(f"{where}`task`: {exc}")
            continue
        for split, src in stage.data.sources().items():
            # Data lives where training runs; a file missing here is worth saying, not an error
            # (`ftk prepare` / `ftk train` fail on it with the file name).
            if not src.startswith(HUB_PREFIX) and not Path(src).is_file():
                report.notes.append(f"{where}`data.{split}`: {src} not found on this machine")
    for p in dry_run(recipe):
        where = "" if p.name == "main" else f"stage {p.name}: "
        errs, notes = check_llamafactory(p.train_args, p.deepspeed, gpu=gpu)
        report.errors += [where + e for e in errs]
        report.notes += [where + n for n in notes if where + n not in report.notes]
        names = [p.train_args["dataset"]] + ([p.train_args["eval_dataset"]] if "eval_dataset" in p.train_args else [])
        report.errors += [where + e for e in check_names(p.recipe, names)]
    if report.errors:
        raise FtkError("; ".join(report.errors), path=path)
    return report
