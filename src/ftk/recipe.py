"""The recipe: one YAML per experiment, validated by pydantic with unknown keys rejected.

`load_recipe(path, overrides)` reads the YAML (yaml.safe_load), follows `extends:` (a path
relative to the recipe; the child's keys win, mappings merge deeply), applies `a.b=value`
overrides and validates. Every error is reported at once, with the file and the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ftk.errors import FtkError
from ftk.tasks import format_validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Where the raw splits come from and where prepared files go."""

    train: str | None = Field(None, description="train split: a file path or hub:<id>[:<split>]")
    validation: str | None = Field(None, description="validation split source")
    test: str | None = Field(None, description="test split source")
    source_format: str | None = Field(None, description="task source format; default by file suffix")
    prepared_dir: str = Field(description="output folder of `ftk prepare` (dataset_dir for LLaMA-Factory)")
    prompt_version: str | None = Field(None, description="task prompt version; the task's default when absent")
    max_samples: dict[str, int] = Field(
        default_factory=dict,
        description="split -> seeded sample size; train is sampled before validation is split off it")
    sample_strategy: Literal["uniform", "stratified"] = "uniform"
    val_size: float | int | None = Field(None, description="fraction or count split off train for validation")
    test_size: float | int | None = Field(None, description="fraction or count split off train for test")
    drop_overlap: bool = Field(False, description="drop train rows whose input is also in validation/test")
    seed: int = 42

    def sources(self) -> dict[str, str]:
        return {k: v for k, v in (("train", self.train), ("validation", self.validation),
                                  ("test", self.test)) if v}


class ModelConfig(_Strict):
    name_or_path: str = Field(description="hub id or local path of the base model")
    template: str = Field("llama3", description="LLaMA-Factory chat template name")
    trust_remote_code: bool = False


class MethodConfig(_Strict):
    finetuning_type: Literal["full", "freeze", "lora"] = "full"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target: str = "all"


class TrainConfig(_Strict):
    stage: Literal["sft", "pt"] = "sft"
    learning_rate: float = 2e-5
    num_train_epochs: float = 1.0
    max_steps: int | None = None
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    weight_decay: float = 0.0
    cutoff_len: int = 1024
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = None
    eval_steps: int | None = None
    plot_loss: bool = True
    resize_vocab: bool = False
    ddp_timeout: int = 180000000
    preprocessing_num_workers: int | None = None
    dataloader_num_workers: int | None = None
    seed: int = 42


class DistributedConfig(_Strict):
    nnodes: int = Field(1, ge=1)
    nproc_per_node: int = Field(1, ge=1)
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    deepspeed: Literal["z0", "z2", "z3", "z3_offload"] | None = Field(
        None, description="DeepSpeed ZeRO stage preset, or a path in deepspeed_config")
    deepspeed_config: str | None = Field(None, description="path to a DeepSpeed JSON (overrides the preset)")
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = "auto"


class TrackingConfig(_Strict):
    report_to: Literal["none", "wandb", "tensorboard"] = "none"
    project: str | None = None


class EvalConfig(_Strict):
    split: str = "test"
    batch_size: int = 64
    max_new_tokens: int | None = Field(None, description="default: longest target + margin")
    limit: int | None = Field(None, description="evaluate only the first N test rows")


class Recipe(_Strict):
    name: str
    task: str = Field(description="built-in task name or path to a task YAML")
    description: str = ""
    data: DataConfig
    model: ModelConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runs_dir: str = "runs"
    llamafactory_args: dict[str, Any] = Field(
        default_factory=dict, description="extra LLaMA-Factory keys, passed through as they are")

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        if self.distributed.deepspeed and self.distributed.deepspeed_config:
            raise ValueError("set only one of `distributed.deepspeed` and `distributed.deepspeed_config`")
        if self.eval.split not in ("train", "validation", "test"):
            raise ValueError(f"`eval.split` {self.eval.split!r} must be train, validation or test")
        return self


def deep_merge(base: dict, child: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FtkError("recipe file not found", path=path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = str(mark.line + 1) if mark else None
        raise FtkError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=path, where=where) from None
    if not isinstance(raw, dict):
        raise FtkError("a recipe must be a YAML mapping", path=path)
    return raw


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a recipe YAML and resolve `extends:` chains."""
    path = Path(path)
    if path.resolve() in _seen:
        raise FtkError("`extends` forms a cycle", path=path, where="extends")
    raw = _read_yaml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not parent_path.is_file():
        raise FtkError(f"extends: {parent} not found", path=path, where="extends")
    base = load_raw(parent_path, _seen + (path.resolve(),))
    return deep_merge(base, raw)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings; values are parsed as YAML scalars (`1e-4`, `true`, `[a, b]`)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FtkError(f"override {item!r} is not of the form key=value")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise FtkError(f"override {item!r}: `{part}` is not a mapping")
        try:
            node[parts[-1]] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            node[parts[-1]] = value
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    raw = apply_overrides(load_raw(path), overrides or [])
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise FtkError(format_validation_error(exc), path=path) from None
