"""Task definitions: a task is data (one YAML file), never code.

A task YAML declares the label set, how each raw source format maps onto records, the named
prompt versions, the target format and the extraction steps. Built-in tasks live beside this
file; a user task is any YAML path with the same schema.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ftk.errors import FtkError, format_validation_error

BUILTIN_DIR = Path(__file__).parent / "tasks"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    """How one raw format (a local file layout or a hub dataset) maps onto records."""

    reader: Literal["csv", "tsv", "jsonl", "hub", "iob2", "at_lines", "text"]
    header: bool = Field(True, description="csv/tsv: the first line holds column names")
    columns: list[str] | None = Field(None, description="column names when the file has no header")
    delimiter: str | None = None
    quoting: bool = Field(True, description="csv/tsv: honour quotes (off for MRPC, whose text holds bare quotes)")
    separator: str = Field("@", description="at_lines: text and label split at the LAST separator")
    encoding: str = "utf-8"
    path: str | None = Field(None, description="hub: dataset id for datasets.load_dataset")
    config: str | None = Field(None, description="hub: dataset config name")
    splits: dict[str, str] = Field(default_factory=dict, description="hub: ftk split -> hub split name")
    label_column: str | None = Field(None, description="column holding the label (classification)")
    label_map: dict[str, str] | None = Field(
        None, description="raw label value -> label name; identity when absent"
    )
    input: str = Field("{text}", description="input text, a format string over the record's columns")
    gold_column: str | None = Field(None, description="shopbench: column holding the gold answer")
    tokens_column: str = Field("tokens", description="ner (hub): column of tokens")
    tags_column: str = Field("ner_tags", description="ner (hub): column of tags")
    tag_names: list[str] | None = Field(None, description="ner (hub): tag name of each integer tag id")
    required: list[str] = Field(default_factory=list, description="columns that must be non-empty")


class PromptSpec(_Strict):
    default: str
    versions: dict[str, str]

    @model_validator(mode="after")
    def _default_exists(self) -> PromptSpec:
        if self.default not in self.versions:
            raise ValueError(f"prompts.default {self.default!r} is not one of {sorted(self.versions)}")
        return self


class ExtractionSpec(_Strict):
    steps: list[str] = Field(default_factory=lambda: ["strip", "number_or_label", "take_first"])
    synonyms: dict[str, str] = Field(default_factory=dict, description="lower-cased text -> label")


Kind = Literal["classification", "pair_classification", "ner", "shopbench", "pretrain"]


class CleaningSpec(_Strict):
    drop_duplicates: bool = Field(True, description="drop repeated inputs within a split (first kept)")
    near_duplicate_rouge_l: float | None = Field(
        None, description="drop rows whose ROUGE-L F with an earlier row is >= this (S4 used 0.7)")


class TaskSpec(_Strict):
    name: str
    kind: Kind
    description: str = ""
    labels: list[str] = Field(default_factory=list, description="class labels, or entity types for ner")
    sources: dict[str, SourceSpec]
    prompts: PromptSpec = Field(default_factory=lambda: PromptSpec(default="plain", versions={"plain": ""}))
    target: str = "{label}"
    extraction: ExtractionSpec = Field(default_factory=ExtractionSpec)
    metrics: list[str] = Field(default_factory=lambda: ["accuracy", "macro_f1"])
    cleaning: CleaningSpec = Field(default_factory=CleaningSpec)

    @model_validator(mode="after")
    def _labels_known(self) -> TaskSpec:
        if self.kind in ("classification", "pair_classification", "ner") and len(self.labels) < 2 \
                and self.kind != "ner":
            raise ValueError(f"a {self.kind} task needs at least 2 labels")
        if self.kind == "ner" and not self.labels:
            raise ValueError("an ner task lists its entity types in `labels`")
        for fmt, src in self.sources.items():
            if self.kind in ("classification", "pair_classification") and not src.label_column:
                raise ValueError(f"sources.{fmt}.label_column is required for a {self.kind} task")
            for raw, name in (src.label_map or {}).items():
                if name not in self.labels:
                    raise ValueError(
                        f"sources.{fmt}.label_map[{raw!r}] = {name!r} is not one of the labels {self.labels}"
                    )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self

    @property
    def is_classification(self) -> bool:
        return self.kind in ("classification", "pair_classification")

    def prompt(self, version: str | None) -> str:
        version = version or self.prompts.default
        if version not in self.prompts.versions:
            raise FtkError(
                f"unknown prompt version {version!r} for task {self.name!r}; "
                f"expected one of {sorted(self.prompts.versions)}"
            )
        return self.prompts.versions[version]

    def target_for(self, label: str) -> str:
        return self.target.format(label=label, index=self.labels.index(label) + 1)


def builtin_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def load_task(name_or_path: str | Path) -> TaskSpec:
    """Load a built-in task by name, or a task YAML by path.

    >>> load_task("agnews").labels
    ['World', 'Sports', 'Business', 'Sci/Tech']
    """
    builtins = builtin_tasks()
    path = Path(name_or_path)
    if str(name_or_path) in builtins:
        path = builtins[str(name_or_path)]
    elif not path.suffix in (".yaml", ".yml") or not path.exists():
        close = difflib.get_close_matches(str(name_or_path), list(builtins), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise FtkError(
            f"unknown task {str(name_or_path)!r}: not a built-in task ({', '.join(builtins)}) "
            f"nor an existing task YAML file{hint}"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise FtkError(f"not valid YAML: {exc}", path=path) from None
    if not isinstance(raw, dict):
        raise FtkError("a task file must be a YAML mapping", path=path)
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as exc:
        raise FtkError(format_validation_error(exc), path=path) from None

