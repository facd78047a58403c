"""The one check: `ftk validate RECIPE`, and the same checks `prepare` and `train` run first.

Everything a later step would reject is found before anything is written and reported at once,
each problem as `file: key: problem (expected ...)`, on one line, exit code 2:

1. the recipe schema: unknown keys, types, ranges, run name, SLURM values (recipe.py);
2. known bad package versions for the recipe's settings (train/environment.py);
3. per stage: the task (a task YAML's own mistakes name that file and key), its prompt version and
   source format; each local data source: it exists, is text, has the columns the task names,
   and (data="full") every row reads, maps to a label and survives cleaning and splitting;
4. referenced files: DeepSpeed config, local model and adapter folders, the tiny model's text;
5. LLaMA-Factory: template names always (read from its source, no import); with
   `llamafactory=True` its own argument parser on the rendered config (`ftk validate`, and
   `ftk train` when the recipe passes raw `llamafactory_args`), plus the dataset names.
On a machine without the recipe's hardware (bf16, DeepSpeed, flash-attention need a GPU) the
hardware-bound keys are neutralised for LLaMA-Factory's parser and the report says so.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ftk.data.prepare import recipe_plan
from ftk.data.sources import HUB_PREFIX, read_source
from ftk.data.task import TaskSpec, load_task
from ftk.errors import FtkError
from ftk.fileio import fds_to
from ftk.recipe import Recipe, load_recipe
from ftk.train import environment
from ftk.train.llamafactory import llamafactory_args_problems, llamafactory_verbosity, template_names

HARDWARE_KEYS = ("bf16", "fp16", "deepspeed", "flash_attn", "quantization_bit")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass
class Report:
    path: str
    recipe: Recipe | None = None
    notes: list[str] = field(default_factory=list)


def validate_recipe(path: str | Path, overrides: list[str] | None = None, *,
                    data: Literal["full", "headers", "skip"] = "full", llamafactory: bool = True) -> Report:
    """Check a recipe; raise one FtkError listing every problem, or return the report (with notes)."""
    recipe = load_recipe(path, overrides)  # schema errors: all at once, with file and key
    rp = str(path)
    errors: list[str] = [f"{rp}: {e}"
                         for e in environment.recipe_problems(recipe) + llamafactory_args_problems(recipe)]
    notes: list[str] = []
    for name, stage in recipe.stage_recipes():
        pre = "" if name == "main" else f"stages.{name}: "
        try:
            task = load_task(stage.task)
        except FtkError as exc:  # an unknown name is the recipe's mistake; a bad task YAML names itself
            errors.append(str(exc) if exc.path else f"{rp}: {pre}`task`: {exc}")
            continue
        stage_errors = [f"{rp}: {pre}{e}" for e in _stage_problems(stage, task)]
        errors += stage_errors
        if not stage_errors:  # data read with a wrong format or prompt would only repeat the problem
            errors += _data_problems(stage, task, rp, pre, data, notes)
    errors += [f"{rp}: {e}" for e in _file_problems(recipe, data != "skip")]
    names = template_names()
    if names is not None and recipe.model.template not in names:
        close = difflib.get_close_matches(recipe.model.template, sorted(names), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        errors.append(f"{rp}: `model.template`: {recipe.model.template!r} is not a LLaMA-Factory template{hint}")
    if llamafactory:
        try:
            errors += [f"{rp}: {e}" for e in _llamafactory_problems(recipe, notes)]
        except FtkError:  # nothing to render yet (e.g. the task did not load): already reported
            pass
    if errors:
        raise FtkError("; ".join(dict.fromkeys(errors)))
    notes += dead_lora_notes(path, recipe)
    return Report(rp, recipe, list(dict.fromkeys(notes)))


def dead_lora_notes(path: str | Path, recipe: Recipe) -> list[str]:
    """LoRA keys written in the recipe (or a file it extends) that its method never reads."""
    from ftk.recipe import load_raw

    if recipe.method.finetuning_type == "lora":
        return []
    try:
        written = load_raw(path).get("method") or {}
    except FtkError:
        return []
    dead = sorted(k for k in written if isinstance(k, str) and k.startswith("lora_"))
    return [f"`method.{', method.'.join(dead)}` do nothing with `method.finetuning_type` "
            f"{recipe.method.finetuning_type} (LoRA keys need lora)"] if dead else []


def _stage_problems(stage: Recipe, task: TaskSpec) -> list[str]:
    out = []
    try:
        task.prompt(stage.data.prompt_version)
    except FtkError as exc:
        out.append(f"`data.prompt_version`: {exc}")
    fmt = stage.data.source_format
    if fmt and fmt not in task.sources:
        out.append(f"`data.source_format`: {fmt!r} is not a source format of task {task.name!r} "
                   f"(expected one of {', '.join(task.sources)})")
    if stage.eval.mode == "choice" and not task.is_classification:
        out.append(f"`eval.mode`: choice needs a closed label set; task {task.name!r} is {task.kind}")
    if stage.train.stage == "pt" and task.kind != "pretrain":
        out.append(f"`train.stage`: pt needs a pretrain task (plain text), not {task.name!r} ({task.kind})")
    if stage.train.stage == "sft" and task.kind == "pretrain":
        out.append(f"`task`: {task.name!r} is a pretrain corpus; use it with `train.stage` pt")
    m = stage.method
    if m.head == "sequence_classification" and not task.is_classification:
        out.append(f"`method.head`: sequence_classification needs a classification task, not {task.name!r} ({task.kind})")
    if m.head == "token_classification" and task.kind != "ner":
        out.append(f"`method.head`: token_classification needs an ner task (IOB2 tags), not {task.name!r} ({task.kind})")
    if m.finetuning_type == "prompt_tuning" and task.kind == "pretrain":
        out.append("`method.finetuning_type`: prompt_tuning needs a task with prompts and targets, not a pretrain corpus")
    if isinstance(m.class_weights, list) and len(m.class_weights) != len(task.labels):
        out.append(f"`method.class_weights`: {len(m.class_weights)} weights for {len(task.labels)} labels "
                   f"(expected one per label: {', '.join(task.labels)})")
    if m.trainer == "ftk" and stage.eval.mode == "choice" and m.head != "none":
        out.append("`eval.mode`: choice scores generated labels; a classification head predicts them directly")
    return out


def _data_problems(stage: Recipe, task: TaskSpec, rp: str, pre: str, data: str, notes: list[str]) -> list[str]:
    """Data sources: existence, text, columns; with data="full" every row, as prepare reads it."""
    sources = stage.data.sources()
    if not sources and not Path(stage.data.prepared_dir, "manifest.json").exists():
        return [f"{rp}: {pre}`data`: no data: set `data.train` (and `data.test`) or prepare the data first"]
    if data == "skip":
        return []
    errors = []
    hub = {s: src for s, src in sources.items() if src.startswith(HUB_PREFIX)}
    for split, src in hub.items():
        if not any(spec.reader == "hub" for spec in task.sources.values()):
            errors.append(f"{rp}: {pre}`data.{split}`: task {task.name!r} declares no hub source for {src}")
        else:
            notes.append(f"{pre}`data.{split}`: {src} is read from the hub when prepared (not checked here)")
    if data == "full" and not hub:
        try:
            recipe_plan(stage, recipe_path=rp)
        except FtkError as exc:
            errors.append(str(exc))
        return errors
    for split, src in sources.items():
        if src.startswith(HUB_PREFIX):
            continue
        try:
            read_source(task, src, split, stage.data.source_format, max_rows=1)
        except FtkError as exc:
            errors.append(str(exc) if exc.path else f"{rp}: {pre}`data.{split}`: {exc}")
    return errors


def _file_problems(recipe: Recipe, data_here: bool = True) -> list[str]:
    out = []
    d = recipe.distributed
    if d.deepspeed_config:
        p = Path(d.deepspeed_config)
        if not p.is_file():
            out.append(f"`distributed.deepspeed_config`: {p} not found (expected a DeepSpeed JSON file)")
        else:
            try:
                if not isinstance(json.loads(p.read_text(encoding="utf-8")), dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError) as exc:
                out.append(f"`distributed.deepspeed_config`: {p} is not a DeepSpeed JSON object ({exc})")
    for name, stage in recipe.stage_recipes():
        pre = "" if name == "main" else f"stages.{name}: "
        sm = stage.model
        if sm.tiny is not None:
            train = stage.data.train
            if data_here and not (Path(sm.name_or_path) / "config.json").exists() and \
                    not (train and Path(train).is_file()):
                out.append(f"{pre}`model.tiny`: building the tiny model needs a local `data.train` file")
        elif not (sm.fetch and not Path(sm.name_or_path).exists()):  # `fetch` brings a missing model
            out += [pre + e for e in _model_path_problems("model.name_or_path", sm.name_or_path, "config.json")]
        if sm.adapter_name_or_path:
            out += [pre + e for e in _model_path_problems("model.adapter_name_or_path", sm.adapter_name_or_path,
                                                          "adapter_config.json")]
    if Path(recipe.runs_dir).exists() and not Path(recipe.runs_dir).is_dir():
        out.append(f"`runs_dir`: {recipe.runs_dir} exists and is not a folder")
    return out


def _model_path_problems(key: str, value: str, marker: str) -> list[str]:
    """A local folder must hold `marker`; a hub id (org/name) is fetched where training runs."""
    p = Path(value).expanduser()
    if p.exists():
        return [] if (p / marker).is_file() else [f"`{key}`: {value} has no {marker} (expected a model folder "
                                                  "or a hub id org/name)"]
    if HUB_ID.fullmatch(value) and not value.startswith((".", "/", "~")):
        return []
    return [f"`{key}`: {value} not found (expected a local folder with {marker} or a hub id org/name)"]


@contextlib.contextmanager
def _silenced():
    """LLaMA-Factory and transformers print warnings on import and while parsing: keep them off
    the terminal (file descriptors 1 and 2), so a refusal is ftk's one line."""
    with fds_to(os.devnull, "wb"):
        yield


def _llamafactory_problems(recipe: Recipe, notes: list[str]) -> list[str]:
    from ftk.train.plan import dry_run

    errors = []
    gpu = _has_gpu()
    for p in dry_run(recipe):
        if p.trainer != "llamafactory":  # ftk's trainer: its keys are ftk's own, checked by the schema
            continue
        where = "" if p.name == "main" else f"stages.{p.name}: "
        errs, n = check_llamafactory(p.train_args, p.deepspeed, gpu=gpu)
        errors += [where + e for e in errs]
        notes += [where + x for x in n]
        notes += [where + x for x in packing_notes(p.train_args)]
        names = [p.train_args["dataset"]] + ([p.train_args["eval_dataset"]] if "eval_dataset" in p.train_args else [])
        errors += [where + e for e in check_dataset_names(p.recipe, names)]
    return errors


def packing_notes(args: dict) -> list[str]:
    """What packing changes besides speed (measured by scripts/bench_packing.py, README "Packing")."""
    if not args.get("packing") or args.get("stage") != "sft":
        return []
    out = ["`train.packing`: several examples share one cutoff_len sequence, so the same batch size makes fewer "
           "optimizer steps (8x fewer in scripts/bench_packing.py); lower per_device_train_batch_size or raise "
           "the epochs to keep the number of updates"]
    if not args.get("neat_packing"):
        out.append("`train.packing: true` lets each packed example attend to the examples before it, with positions "
                   "restarting per example (LLaMA-Factory's plain packing, not ftk's: the same YAML run by "
                   "llamafactory-cli gives the same losses); measured here, it trained a tiny model and SmolLM2-135M "
                   "to chance at equal steps where `packing: neat` (no attention across examples) learnt; "
                   "LLaMA-Factory issue #8277 reports packed SFT loss far above unpacked: prefer neat")
    return out


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def check_llamafactory(args: dict, deepspeed: dict | None, *, gpu: bool) -> tuple[list[str], list[str]]:
    """(errors, notes) from LLaMA-Factory's own parser on the rendered args."""
    args = dict(args)
    notes = []
    with tempfile.TemporaryDirectory() as tmp, _silenced(), llamafactory_verbosity("ERROR"):
        from llamafactory.hparams import get_train_args
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
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
            get_train_args(args)
        except SystemExit as exc:
            return [f"LLaMA-Factory refused the config (exit {exc.code})"], notes
        except Exception as exc:  # its parser raises ValueError / TypeError with a message
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            keys = re.search(r"Some keys are not used by the HfArgumentParser: \[(.*)\]", str(exc))
            if keys:
                msg = f"unknown LLaMA-Factory key(s) {keys.group(1)} (check `llamafactory_args`)"
            return [f"`llamafactory_args`: LLaMA-Factory refused the config: {msg}"], notes
    return [], notes


def check_dataset_names(recipe: Recipe, dataset_names: list[str]) -> list[str]:
    from ftk.data.dataset_info import read_dataset_info

    info = Path(recipe.data.prepared_dir) / "dataset_info.json"
    if not info.exists():
        return []
    registered = read_dataset_info(recipe.data.prepared_dir)
    return [f"dataset {name!r} is not registered in {info} (run `ftk prepare`)"
            for name in dataset_names if name not in registered]


def check_for_training(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """What `ftk train` checks before writing anything: everything `validate` does, except that data
    already prepared from these settings is not read again (and data that will be prepared is read
    by prepare itself, still before anything is written), and LLaMA-Factory's own parser (seconds of
    imports) runs only when the recipe passes raw `llamafactory_args`."""
    from ftk.train.run import is_prepared

    recipe = load_recipe(path, overrides)
    stages = [s for _, s in recipe.stage_recipes()]
    current = all(_safe(is_prepared, s) for s in stages)
    raw_args = any(s.llamafactory_args for s in stages)
    return validate_recipe(path, overrides, data="skip" if current else "headers", llamafactory=raw_args).recipe


def check_for_prepare(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """What `ftk prepare RECIPE` checks first: the recipe, task, files and columns (the rows are read
    by prepare itself, before anything is written)."""
    return validate_recipe(path, overrides, data="headers", llamafactory=False).recipe


def _safe(fn, *args) -> bool:
    try:
        return bool(fn(*args))
    except FtkError:
        return False
