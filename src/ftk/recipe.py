"""The recipe: one YAML per experiment, validated by pydantic with unknown keys rejected.

`load_recipe(path, overrides)` reads the YAML (ftk.yamlio: safe_load, UTF-8, bounded aliases), follows `extends:` (a path
relative to the recipe; the child's keys win, mappings merge deeply), applies `a.b=value`
overrides and validates. Every error is reported at once, with the file and the key.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftk.errors import FtkError, error_locs, format_validation_error, suggest_key
from ftk.models.tiny import TinyModelSpec
from ftk.yamlio import deep_merge, read_yaml  # noqa: F401 (deep_merge: ftk.recipe's API)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


SampleStrategy = Literal["uniform", "stratified", "balanced"]
SAMPLE_STRATEGIES: tuple[str, ...] = get_args(SampleStrategy)  # `ftk prepare --sample-strategy` checks against it


class DataConfig(_Strict):
    """Where the raw splits come from and where prepared files go."""

    train: str | None = Field(None, description="train split: a file path or hub:<id>[:<split>]")
    validation: str | None = Field(None, description="validation split source")
    test: str | None = Field(None, description="test split source")
    source_format: str | None = Field(None, description="task source format; default by file suffix")
    prepared_dir: Annotated[str, AfterValidator(lambda v: _matches(PLAIN_PATH, v, "folder path"))] = Field(
        description="output folder of `ftk prepare` (dataset_dir for LLaMA-Factory)")
    prompt_version: str | None = Field(None, description="task prompt version; the task's default when absent")
    max_samples: dict[Literal["train", "validation", "test"], int] = Field(
        default_factory=dict,
        description="split -> seeded sample size; train is sampled before validation is split off it")
    sample_strategy: SampleStrategy = Field(
        "uniform", description="max_samples: uniform, stratified (label shares kept) or balanced (the same number "
                               "of each label; a constant answer then scores 1 / labels)")
    val_size: float | int | None = Field(None, gt=0, description="fraction (<1) or count split off train for validation")
    test_size: float | int | None = Field(None, gt=0, description="fraction (<1) or count split off train for test")
    drop_overlap: bool = Field(False, description="drop train rows whose input is also in validation/test")
    seed: int = Field(42, ge=0)

    @field_validator("max_samples")
    @classmethod
    def _positive_samples(cls, v: dict) -> dict:
        bad = {k: n for k, n in v.items() if n < 1}
        if bad:
            raise ValueError(f"sample sizes must be >= 1, got {bad}")
        return v

    def sources(self) -> dict[str, str]:
        return {k: v for k, v in (("train", self.train), ("validation", self.validation),
                                  ("test", self.test)) if v}


class ModelConfig(_Strict):
    name_or_path: str = Field(min_length=1, description="hub id or local path of the base model")
    template: str = Field("llama3", description="LLaMA-Factory chat template name")
    trust_remote_code: bool = Field(False, description="run the model repo's own code (off unless needed)")
    adapter_name_or_path: str | None = Field(None, description="start from this LoRA adapter")
    tiny: TinyModelSpec | None = Field(None, description="build a tiny model here from the train text if missing")
    fetch: str | None = Field(None, description="a model of `ftk model list`, imported here if missing")

    @field_validator("fetch")
    @classmethod
    def _known_fetch(cls, v: str | None) -> str | None:
        from ftk.models.fetch import lookup

        try:
            return v if v is None else lookup(v).name
        except FtkError as exc:
            raise ValueError(str(exc)) from None


class MethodConfig(_Strict):
    """How the model is fine-tuned. Generative SFT (no `head`, finetuning_type full/freeze/lora) runs
    on LLaMA-Factory; a classification head or prompt tuning runs on ftk's own trainer
    (transformers' Trainer + PEFT), launched the same way."""

    finetuning_type: Literal["full", "freeze", "lora", "prompt_tuning"] = "full"
    head: Literal["none", "sequence_classification", "token_classification"] = Field(
        "none", description="a classification head instead of generation (ftk's trainer): one label per "
                            "input, or one IOB2 tag per word (labels on each word's first sub-token)")
    quantization_bit: Literal[4, 8] | None = Field(None, description="QLoRA: 4 (or 8) with finetuning_type lora")
    lora_rank: int = Field(8, ge=1, le=4096)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target: str = Field("all", description="comma-separated module names, or all")
    lora_bias: Literal["none", "all", "lora_only"] = Field("none", description="PEFT LoRA bias (ftk's trainer)")
    class_weights: Literal["none", "balanced"] | list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        "none", description="sequence_classification loss weights: none, balanced (scikit-learn's "
                            "compute_class_weight on the train split) or one weight per label")
    append_eos: bool = Field(True, description="sequence_classification: end every input with the end-of-"
                             "sequence token, so the head reads the same final token after any text (a no-op "
                             "when pad = eos, which the model treats as padding)")
    num_virtual_tokens: int = Field(8, ge=1, description="prompt_tuning: virtual tokens in front of the prompt")
    prompt_tuning_init: Literal["random", "text"] = Field("random", description="prompt_tuning initialisation")
    prompt_tuning_init_text: str | None = Field(None, description="prompt_tuning init text (default: the task prompt)")
    freeze_trainable_layers: int = Field(2, description="freeze: train the last N layers")

    @property
    def trainer(self) -> Literal["llamafactory", "ftk"]:
        """Which trainer runs this method: LLaMA-Factory, or ftk's own (train/hf/)."""
        return "ftk" if self.head != "none" or self.finetuning_type == "prompt_tuning" else "llamafactory"


class TrainConfig(_Strict):
    stage: Literal["sft", "pt"] = "sft"
    learning_rate: float = Field(2e-5, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    per_device_train_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    cutoff_len: int = Field(1024, ge=8, le=1_048_576)
    packing: bool | Literal["neat"] = Field(
        False, description="pack short examples into cutoff_len sequences (LLaMA-Factory `packing`); "
                           "neat = packed without attention across examples (`neat_packing`, sft only)")
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = Field(None, ge=1)
    eval_steps: int | None = Field(None, ge=1)
    plot_loss: bool = True
    resize_vocab: bool = False
    ddp_timeout: int = Field(180000000, ge=1)
    preprocessing_num_workers: int | None = Field(None, ge=1)
    dataloader_num_workers: int | None = Field(None, ge=0)
    seed: int = Field(42, ge=0)


# Everything that reaches sbatch.sh matches one of these (no spaces, quotes, newlines or shell syntax).
SLURM_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,-]*")
SLURM_TIME = re.compile(r"(\d+-)?\d{1,4}(:\d{1,2}){0,2}|UNLIMITED|INFINITE")
SLURM_OPTION = re.compile(r"--[A-Za-z][A-Za-z0-9-]*(=[A-Za-z0-9._,:=/@%+-]+)?")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PLAIN_PATH = re.compile(r"[^\x00-\x1f\x7f]+")  # no newline or other control character


def _matches(rx: re.Pattern, value: str, what: str) -> str:
    if not rx.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid {what} (expected {rx.pattern})")
    return value


def _sbatch_option(v: str) -> str:
    if _matches(SLURM_OPTION, v, "sbatch option").split("=", 1)[0] in ("--export", "--export-file", "--get-user-env"):
        raise ValueError(f"{v.split('=', 1)[0]} would let a recipe set the job's environment (BASH_ENV, PATH, "
                         "...); export variables in your shell before `ftk train --slurm` instead")
    return v


def _hms(v):  # YAML 1.1 reads an unquoted 24:00:00 as the integer 86400 (seconds)
    return f"{v // 3600}:{v % 3600 // 60:02d}:{v % 60:02d}" if isinstance(v, int) and not isinstance(v, bool) else v


class SlurmConfig(_Strict):
    partition: Annotated[str, AfterValidator(lambda v: _matches(SLURM_WORD, v, "SLURM partition"))] | None = Field(
        None, description="SLURM partition(s), e.g. gpu or gpu,debug")
    account: Annotated[str, AfterValidator(lambda v: _matches(SLURM_WORD, v, "SLURM account"))] | None = None
    time: Annotated[str, BeforeValidator(_hms), AfterValidator(lambda v: _matches(SLURM_TIME, v, "SLURM time limit"))
                    ] | None = Field(None, description="wall-time limit, e.g. 24:00:00 or 2-00:00:00")
    gpus_per_node: int | None = Field(None, ge=0, description="default nproc_per_node; 0: a CPU partition")
    cpus_per_task: int | None = Field(None, ge=1, description="default: the partition's own")
    extra_sbatch: list[Annotated[str, AfterValidator(_sbatch_option)]] = Field(
        default_factory=list, description="more #SBATCH options, e.g. --qos=high (not --export)")


class DistributedConfig(_Strict):
    nnodes: int = Field(1, ge=1)
    nproc_per_node: int = Field(1, ge=1)
    master_addr: str = Field("127.0.0.1", pattern=r"^[A-Za-z0-9][A-Za-z0-9.:-]*$")
    master_port: int = Field(29500, ge=1, le=65535)
    deepspeed: Literal["z0", "z2", "z3", "z3_offload"] | None = Field(
        None, description="DeepSpeed ZeRO stage preset, or a path in deepspeed_config")
    deepspeed_config: str | None = Field(None, description="path to a DeepSpeed JSON (overrides the preset)")
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = "auto"
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)


class TrackingConfig(_Strict):
    report_to: Literal["none", "wandb", "tensorboard"] = "none"
    project: str | None = None


class EvalConfig(_Strict):
    split: str = "test"
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="generation batch size; auto = 256 on a GPU (halved on out-of-memory), 32 on CPU")
    max_new_tokens: int | None = Field(None, ge=1, le=32_768, description="default: longest target + margin")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N test rows")
    mode: Literal["generate", "choice"] = Field("generate", description="free generation or label-choice scoring")


class StageConfig(_Strict):
    """One stage of a chain (e.g. pt then sft): keys here override the recipe for this stage; each
    stage after the first starts from the previous stage's output."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    task: str | None = None
    data: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    train: dict[str, Any] | None = None


class Recipe(_Strict):
    name: str = Field(description="run name: runs/<name>-<timestamp>/ (letters, digits, '.', '_', '-')")
    task: str = Field(description="built-in task name or path to a task YAML")
    description: str = ""
    data: DataConfig
    model: ModelConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runs_dir: Annotated[str, AfterValidator(lambda v: _matches(PLAIN_PATH, v, "folder path"))] = "runs"
    llamafactory_args: dict[str, Any] = Field(
        default_factory=dict, description="extra LLaMA-Factory keys, passed through as they are")
    stages: list[StageConfig] = Field(default_factory=list, description="optional chain, e.g. pt then sft")

    @field_validator("name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        return _matches(RUN_NAME, v, "run name")

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        problems = []
        d, m, t = self.distributed, self.method, self.train
        if d.deepspeed and d.deepspeed_config:
            problems.append("set only one of `distributed.deepspeed` and `distributed.deepspeed_config`")
        if self.eval.split not in ("train", "validation", "test"):
            problems.append(f"`eval.split` {self.eval.split!r} must be train, validation or test")
        zero3 = d.deepspeed in ("z3", "z3_offload")
        if zero3 and self.llamafactory_args.get("predict_with_generate"):
            problems.append("`distributed.deepspeed` z3 with `llamafactory_args.predict_with_generate`: "
                            "LLaMA-Factory refuses generation under ZeRO-3 (use `ftk eval`)")
        if m.quantization_bit and m.finetuning_type != "lora":
            problems.append(f"`method.quantization_bit` {m.quantization_bit} needs `method.finetuning_type` lora "
                            f"(QLoRA), not {m.finetuning_type}")
        if m.quantization_bit and zero3:
            problems.append("`method.quantization_bit` (QLoRA) does not work with `distributed.deepspeed` z3")
        if t.eval_steps and not (self.data.val_size or self.data.validation):
            problems.append("`train.eval_steps` needs a validation split (`data.val_size` or `data.validation`)")
        if t.packing == "neat" and t.stage != "sft":
            problems.append(f"`train.packing` neat needs `train.stage` sft, not {t.stage} (LLaMA-Factory refuses it)")
        if t.packing == "neat" and d.flash_attn == "fa2" and t.per_device_train_batch_size != 1:
            problems.append("`train.packing` neat with `distributed.flash_attn` fa2 needs "
                            f"`train.per_device_train_batch_size` 1, not {t.per_device_train_batch_size}")
        problems += _method_problems(self)
        if self.model.adapter_name_or_path and m.finetuning_type != "lora":
            problems.append("`model.adapter_name_or_path` needs `method.finetuning_type` lora")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def stage_recipes(self) -> list[tuple[str, Recipe]]:
        """The chain as full recipes ([("main", self)] without stages)."""
        if not self.stages:
            return [("main", self)]
        base = self.model_dump(mode="python", exclude={"stages"})
        out = []
        for i, st in enumerate(self.stages):
            merged = deep_merge(base, {k: v for k, v in st.model_dump(exclude={"name"}).items() if v is not None})
            try:
                out.append((st.name, Recipe.model_validate(merged)))
            except ValidationError as exc:
                raise ValueError(f"stage {st.name!r} (`stages.{i}`): " + format_validation_error(exc)) from None
        return out


def _method_problems(r: Recipe) -> list[str]:
    """Combinations ftk's own trainer (heads, prompt tuning) does not support, and the reverse."""
    m, t = r.method, r.train
    out = []
    if m.head != "none" and m.finetuning_type not in ("lora", "full"):
        out.append(f"`method.head` {m.head} trains with `method.finetuning_type` lora or full, not {m.finetuning_type}")
    if m.class_weights != "none" and m.head != "sequence_classification":
        out.append("`method.class_weights` needs `method.head` sequence_classification")
    if m.prompt_tuning_init_text and m.prompt_tuning_init != "text":
        out.append("`method.prompt_tuning_init_text` needs `method.prompt_tuning_init` text")
    if m.finetuning_type == "prompt_tuning" and m.num_virtual_tokens * 2 > t.cutoff_len:
        out.append(f"`method.num_virtual_tokens` {m.num_virtual_tokens} leaves too little of `train.cutoff_len` "
                   f"{t.cutoff_len} for the text (at most half of it)")

    if m.trainer == "llamafactory":
        if m.lora_bias != "none":
            out.append("`method.lora_bias` needs ftk's trainer (a `method.head`); LLaMA-Factory's LoRA has no bias option")
        return out
    what = "a classification head" if m.head != "none" else "prompt tuning"
    for bad, msg in ((m.quantization_bit, "`method.quantization_bit`"), (r.stages, "`stages`"),
                     (r.llamafactory_args, "`llamafactory_args`"), (t.packing, "`train.packing`"),
                     (t.stage != "sft", f"`train.stage` {t.stage}"), (t.resize_vocab, "`train.resize_vocab`")):
        if bad:
            out.append(f"{msg} is not available with {what} (ftk's trainer)")
    return out


def _read_yaml(path: Path) -> dict:
    raw = read_yaml(path, "recipe file")
    if not isinstance(raw, dict):
        raise FtkError(f"a recipe must be a YAML mapping of keys, not {type(raw).__name__}", path=path)
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise FtkError(f"recipe keys must be strings, got {bad[0]!r}", path=path)
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
    if not isinstance(parent, str) or not parent:
        raise FtkError(f"`extends` must be a recipe path, got {parent!r}", path=path, where="extends")
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not parent_path.is_file():
        raise FtkError(f"{parent} not found (expected a recipe path relative to this file)", path=path,
                       where="extends")
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
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        given = [tuple(o.partition("=")[0].split(".")) for o in overrides or []]
        from_cli = all(any(loc[:len(k)] == k for k in given) for loc in error_locs(exc))  # only the overrides are wrong
        raise FtkError(format_validation_error(exc, lambda loc: suggest_key(Recipe, loc)),
                       path=f"command line (over {path})" if from_cli else path) from None
    try:
        recipe.stage_recipes()
    except ValueError as exc:
        raise FtkError(str(exc), path=path) from None
    return recipe


def json_schema() -> dict:
    """The schema of a recipe file: `extends` allowed, and the required keys required only of a file
    that extends nothing (a file that extends another fills in only what it changes)."""
    schema = Recipe.model_json_schema()
    schema["properties"] = {"extends": {"type": "string", "description": "the recipe this file starts from, "
                                        "relative to this file"}, **schema["properties"]}
    required = schema.pop("required", [])
    for sub in schema.get("$defs", {}).values():
        sub.pop("required", None)  # checked by `ftk validate` once `extends` is resolved
    schema.update({"if": {"not": {"required": ["extends"]}}, "then": {"required": required}})
    return schema
