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

from ftk.errors import FtkError

BUILTIN_DIR = Path(__file__).parent


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    """How one raw format (a local file layout or a hub dataset) maps onto records."""

    reader: Literal["csv", "tsv", "jsonl", "hub"]
    header: bool = Field(True, description="csv/tsv: the first line holds column names")
    columns: list[str] | None = Field(None, description="column names when the file has no header")
    delimiter: str | None = None
    encoding: str = "utf-8"
    path: str | None = Field(None, description="hub: dataset id for datasets.load_dataset")
    config: str | None = Field(None, description="hub: dataset config name")
    label_column: str
    label_map: dict[str, str] | None = Field(
        None, description="raw label value -> label name; identity when absent"
    )
    input: str = Field(description="input text, a format string over the record's columns")
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


class TaskSpec(_Strict):
    name: str
    kind: Literal["classification", "pair_classification"]
    description: str = ""
    labels: list[str] = Field(min_length=2)
    sources: dict[str, SourceSpec]
    prompts: PromptSpec
    target: str = "{label}"
    extraction: ExtractionSpec = Field(default_factory=ExtractionSpec)
    metrics: list[str] = Field(default_factory=lambda: ["accuracy", "macro_f1"])

    @model_validator(mode="after")
    def _labels_known(self) -> TaskSpec:
        for fmt, src in self.sources.items():
            for raw, name in (src.label_map or {}).items():
                if name not in self.labels:
                    raise ValueError(
                        f"sources.{fmt}.label_map[{raw!r}] = {name!r} is not one of the labels {self.labels}"
                    )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self

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


def format_validation_error(exc: ValidationError) -> str:
    """All pydantic errors on one line: `key.path: message; other.key: message`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"`{loc}`: {msg}")
    return "; ".join(parts)
