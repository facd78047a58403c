"""A study file: a base recipe and the axes to vary over any of its keys.

```yaml
name: agnews_lr                      # the study folder: runs/study-<name>/ (or --out)
recipe: ../configs/agnews_tiny_cpu.yaml   # relative to this file
overrides: [train.max_steps=60]      # every trial (and the base row)
base: true                           # a row for the recipe's model before training
bases:                               # more base rows: zero-shot choice, K-shot (in-context) choice
  - {mode: choice}
  - {mode: choice, shots: 8, overrides: [train.cutoff_len=1024]}
baselines: [tfidf, majority]         # `ftk baseline` rows (CV-chosen TF-IDF; majority label / all-O)
grid:                                # cartesian product
  train.learning_rate: [1.0e-3, 5.0e-4, 2.0e-4]
paired:                              # each group's lists move together (zip), groups multiply
  - {train.num_train_epochs: [1, 5], train.save_steps: [50, 250]}
strategy: grid                       # or optuna: a search, its storage in the study folder
optuna: {trials: 8, direction: maximize, seed: 0,
         params: {train.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}}}
eval: {mode: generate, split: test}
```
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ftk.errors import FtkError
from ftk.recipe import RUN_NAME, load_recipe
from ftk.yamlio import read_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptunaParam(_Strict):
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> OptunaParam:
        if self.choices is None and (self.low is None or self.high is None or self.low >= self.high):
            raise ValueError("give low < high, or choices")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("log needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both (Optuna samples a log scale continuously)")
        if self.choices is not None and (self.low is not None or self.high is not None or self.step is not None):
            raise ValueError("give choices, or low/high (with log or step): not both")
        if self.choices is not None and not self.choices:
            raise ValueError("choices is empty")
        return self


class OptunaSpec(_Strict):
    trials: int = Field(ge=1)
    direction: Literal["maximize", "minimize"] = "maximize"
    seed: int = Field(0, ge=0)
    params: dict[str, OptunaParam] = Field(min_length=1)


class EvalSpec(_Strict):
    split: Literal["train", "validation", "test"] = "test"
    mode: Literal["generate", "choice"] | None = None
    limit: int | None = Field(None, ge=1)


# A base row of a recipe with a classification head, in generate or choice mode, is the language
# model answering the task's prompt: the head (and its head-only keys) is set aside for that row.
GENERATIVE_BASE = ["method.head=none", "method.class_weights=none", "method.lora_bias=none"]


class ServedRow(_Strict):
    """A model behind an OpenAI-compatible server answers this base row (`ftk eval --engine openai`)."""

    base_url: str = Field(description="the server, e.g. http://127.0.0.1:8080/v1 or https://api.openai.com/v1")
    model: str = Field(min_length=1, description="the served model's name")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (never written)")
    api: Literal["auto", "completions", "chat"] = "auto"
    concurrency: int = Field(4, ge=1, le=256)


class BaseRow(_Strict):
    """One more row of the recipe's model before training (besides `base: true`, the recipe's own
    mode: the untrained head for head recipes)."""

    mode: Literal["generate", "choice"] = "generate"
    shots: int | None = Field(None, ge=1, le=64, description="in-context examples from the train split")
    overrides: list[str] = Field(default_factory=list, description="key=value for this row only (e.g. a longer "
                                 "train.cutoff_len to make room for the examples)")
    served: ServedRow | None = Field(None, description="a served model answers instead of the recipe's (mode "
                                     "generate)")

    @model_validator(mode="after")
    def _served_generates(self) -> BaseRow:
        if self.served is not None and self.mode != "generate":
            raise ValueError("a served model generates its answers: mode choice needs the model's own likelihoods")
        return self

    @property
    def id(self) -> str:
        served = "-" + re.sub(r"[^A-Za-z0-9.]+", "-", self.served.model).strip("-").lower() if self.served else ""
        return f"base-{self.mode}" + (f"-{self.shots}shot" if self.shots else "") + served


class StudySpec(_Strict):
    name: str
    recipe: str = Field(description="the base recipe, relative to the study file")
    description: str = ""
    overrides: list[str] = Field(default_factory=list, description="key=value for every trial and the base row")
    base: bool = Field(False, description="add the recipe's model before training as a row")
    bases: list[BaseRow] = Field(default_factory=list, description="more base-model rows (mode, shots)")
    baselines: list[Literal["tfidf", "majority"]] = Field(default_factory=list, description="`ftk baseline` rows")
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    paired: list[dict[str, list[Any]]] = Field(default_factory=list)
    strategy: Literal["grid", "optuna"] = "grid"
    optuna: OptunaSpec | None = None
    eval: EvalSpec = Field(default_factory=EvalSpec)
    metric: Literal["accuracy", "macro_f1", "f1", "score"] | None = Field(
        None, description="the report's one metric (table, best, deltas, paired tests); default: the task's "
                          "headline")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not RUN_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid study name (expected {RUN_NAME.pattern})")
        return v

    @model_validator(mode="after")
    def _axes(self) -> StudySpec:
        for i, group in enumerate(self.paired):
            lengths = {len(v) for v in group.values()}
            if len(lengths) != 1:
                raise ValueError(f"paired.{i}: the lists of a group must have one length, got {sorted(lengths)}")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{key}: give at least one value")
        seen: dict[str, str] = {key: "grid" for key in self.grid}
        for i, group in enumerate(self.paired):  # a key varied twice: one axis would silently win
            for key in group:
                if key in seen:
                    raise ValueError(f"paired.{i}.{key}: {key} is already varied in {seen[key]}; vary a key in one "
                                     "place only")
                seen[key] = f"paired.{i}"
        if self.strategy == "optuna" and self.optuna is None:
            raise ValueError("strategy optuna needs an `optuna` section (trials, params)")
        if self.strategy == "grid" and self.optuna is not None:
            raise ValueError("`optuna` is set but strategy is grid")
        ids = [b.id for b in self.bases]
        if len(set(ids)) < len(ids):
            raise ValueError(f"bases: two rows with the same mode and shots ({', '.join(ids)})")
        if len(set(self.baselines)) < len(self.baselines):
            raise ValueError("baselines: a baseline is named twice")
        if self.strategy == "grid" and not (self.grid or self.paired or self.base or self.bases):
            raise ValueError("nothing to vary: give grid, paired or base: true")
        return self


def _value(v: Any) -> str:
    """A value as an override writes it (YAML)."""
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def trial_overrides(spec: StudySpec) -> list[dict[str, Any]]:
    """Every grid trial's varied keys and values: the grid's product times the paired groups' product;
    with no axes, one trial: the recipe as it is (base vs fine-tuned)."""
    axes: list[list[dict[str, Any]]] = []
    if spec.grid:
        keys = list(spec.grid)
        axes.append([dict(zip(keys, combo)) for combo in itertools.product(*(spec.grid[k] for k in keys))])
    for group in spec.paired:
        keys = list(group)
        axes.append([dict(zip(keys, vals)) for vals in zip(*(group[k] for k in keys))])
    trials = []
    for combo in itertools.product(*axes):  # no axes: one empty combination
        merged: dict[str, Any] = {}
        for part in combo:
            merged.update(part)
        trials.append(merged)
    return trials


def trial_id(index: int, varied: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(varied, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"t{index:02d}-{digest}"


def as_overrides(varied: dict[str, Any]) -> list[str]:
    return [f"{k}={_value(v)}" for k, v in varied.items()]


def optuna_corners(o: OptunaSpec) -> list[dict[str, Any]]:
    """Values an Optuna search may ask for, to validate before anything runs: every choice of each
    parameter and both ends of each range (the other parameters at their first value)."""
    def values(p: OptunaParam) -> list[Any]:
        if p.choices is not None:
            return list(p.choices)
        return [int(p.low), int(p.high)] if p.integer else [p.low, p.high]

    first = {k: values(p)[0] for k, p in o.params.items()}
    return [dict(first, **{k: v}) for k, p in o.params.items() for v in values(p)]


def load_study(path: str | Path) -> tuple[StudySpec, Path]:
    """The study and its base recipe's path; the recipe and every trial's overrides are checked
    (schema) now, so a typo fails before anything trains."""
    path = Path(path)
    spec = read_model(path, StudySpec, "study file")
    recipe_path = Path(spec.recipe) if Path(spec.recipe).is_absolute() else path.parent / spec.recipe
    if not recipe_path.is_file():
        raise FtkError(f"{spec.recipe} not found (expected a recipe path relative to this file)", path=path,
                       where="recipe")
    axes = trial_overrides(spec) if spec.strategy == "grid" else optuna_corners(spec.optuna)
    for varied in axes or [{}]:
        try:
            load_recipe(recipe_path, spec.overrides + as_overrides(varied))
        except FtkError as exc:
            raise FtkError(f"a trial's recipe does not validate ({', '.join(as_overrides(varied)) or 'base'}): "
                           f"{exc}", path=path) from None
    for i, row in enumerate(spec.bases):
        try:
            base_row_overrides(spec, recipe_path, row)
        except FtkError as exc:
            raise FtkError(f"base row {row.id}: {exc}", path=path, where=f"bases.{i}") from None
    return spec, recipe_path


def base_row_overrides(spec: StudySpec, recipe_path: Path, row: BaseRow) -> list[str]:
    """The overrides of one `bases` row (checked): the study's, the head set aside, the row's own."""
    from ftk.data.task import load_task

    plain = load_recipe(recipe_path, spec.overrides)
    overrides = list(spec.overrides) + (GENERATIVE_BASE if plain.method.head != "none" else []) + row.overrides
    r = load_recipe(recipe_path, overrides)
    task = load_task(r.stage_recipes()[-1][1].task)
    if row.mode == "choice" and not task.is_classification:
        raise FtkError(f"mode choice needs a closed label set; task {task.name!r} is {task.kind}")
    return overrides
