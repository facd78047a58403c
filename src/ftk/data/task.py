"""Task definitions: a task is data (one YAML file), never code.

A task YAML declares the label set, how each raw source format maps onto records, the named
prompt versions, the target format and the extraction steps. Built-in tasks live beside this
file (tasks/*.yaml); a user task is any YAML path with the same schema. Every mistake a task YAML
can hold on its own is an error naming that file and the key; what needs the data (columns of a
file) is checked against it by data/checks.py.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import re
import string
import unicodedata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ftk.errors import FtkError
from ftk.yamlio import read_model

# Bounds on what a task may ask for: a label is an answer a model writes, and eval reserves room for
# the longest one in every prompt and scores every label in choice mode.
MAX_LABELS = 10_000
MAX_LABEL_CHARS = 200
INVALID_LABEL = "[invalid]"  # what extraction makes of an unparseable answer (eval/extract.py)

BUILTIN_DIR = Path(__file__).parent / "tasks"

# The extraction steps eval/extract.py implements (a test keeps the two lists equal), and the
# steps that take a parameter after a colon.
EXTRACTION_STEPS = ("strip", "lower", "first_line", "number_or_label", "label", "option_letter", "take_first")
PARAM_STEPS = ("regex:", "after:")
METRICS = {
    "classification": ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "mcc"),
    "pair_classification": ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "mcc"),
    "ner": ("f1", "precision", "recall", "macro_f1", "token_accuracy"),
    "shopbench": ("score",),
    "pretrain": (),
}
PLACEHOLDER = re.compile(r"\{(\w*)\}")


def check_step(step: str) -> str:
    """The step itself, or ValueError saying what steps exist."""
    if step in EXTRACTION_STEPS:
        return step
    if step.startswith("regex:"):
        rest = step[len("regex:"):]
        group, sep, pattern = rest.partition(":")
        pattern = pattern if sep and (group.isascii() and group.isdigit()) else rest
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"extraction step {step!r}: not a valid regular expression ({exc})") from None
        if sep and (group.isascii() and group.isdigit()) and int(group) > rx.groups:
            raise ValueError(f"extraction step {step!r}: the pattern has only {rx.groups} group(s)")
        if not (sep and (group.isascii() and group.isdigit())) and rx.groups < 1:
            raise ValueError(f"extraction step {step!r}: the pattern needs a (group) to keep")
        return step
    if step.startswith("after:") and step[len("after:"):]:
        return step
    raise ValueError(f"unknown extraction step {step!r} (expected one of {', '.join(EXTRACTION_STEPS)}, "
                     "regex:<pattern> or after:<text>)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    """How one raw format (a local file layout or a hub dataset) maps onto records."""

    reader: Literal["csv", "tsv", "jsonl", "hub", "iob2", "at_lines", "text"]
    header: bool = Field(True, description="csv/tsv: the first line holds column names")
    columns: list[str] | None = Field(None, description="column names when the file has no header")
    delimiter: str | None = None
    quoting: bool = Field(True, description="csv/tsv: honour quotes (off for MRPC, whose text holds bare quotes)")
    max_record_lines: int = Field(
        50, ge=1, description="csv/tsv: a quoted field running over more lines is an unterminated quote (malformed)")
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
    id_column: str | None = Field(None, description="column with the source's own row id (kept in predictions)")

    @field_validator("encoding")
    @classmethod
    def _codec(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r} (expected e.g. utf-8, latin-1)") from None
        return v

    @field_validator("delimiter", "separator")
    @classmethod
    def _one_char(cls, v: str | None, info) -> str | None:
        if v is not None and (len(v) != 1 and info.field_name == "delimiter" or not v):
            raise ValueError(f"{info.field_name} must be a single character, got {v!r}")
        return v

    @field_validator("input")
    @classmethod
    def _format_string(cls, v: str) -> str:
        try:
            names = [n for _, n, _, _ in string.Formatter().parse(v) if n is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid format string {v!r} ({exc}); write columns as {{column}}") from None
        bad = [n for n in names if not n.isidentifier()]
        if bad:
            raise ValueError(f"{v!r}: {{{bad[0]}}} is not a column name (expected {{column}}; "
                             "write a literal brace as {{ or }})")
        return v

    def fields(self) -> list[str]:
        """Columns the `input` template reads."""
        return [n for _, n, _, _ in string.Formatter().parse(self.input) if n]


class PromptSpec(_Strict):
    default: str
    versions: dict[str, str]

    @model_validator(mode="after")
    def _default_exists(self) -> PromptSpec:
        if self.default not in self.versions:
            raise ValueError(f"prompts.default {self.default!r} is not one of {sorted(self.versions)}")
        for name, text in self.versions.items():
            bad = [p for p in PLACEHOLDER.findall(text) if p != "input"]
            if bad:
                raise ValueError(f"prompts.versions.{name}: placeholder {{{bad[0]}}} is unknown (expected only "
                                 "{input}, the input text that `sources.<format>.input` builds from the columns)")
        return self


class ExtractionSpec(_Strict):
    steps: list[str] = Field(default_factory=lambda: ["strip", "number_or_label", "take_first"])
    synonyms: dict[str, str] = Field(default_factory=dict, description="lower-cased text -> label")

    @field_validator("steps")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one extraction step is needed")
        return [check_step(s) for s in v]


Kind = Literal["classification", "pair_classification", "ner", "shopbench", "pretrain"]


class CleaningSpec(_Strict):
    drop_duplicates: bool = Field(True, description="drop repeated inputs within a split (first kept)")
    near_duplicate_rouge_l: float | None = Field(
        None, description="drop rows whose ROUGE-L F with an earlier row is >= this (S4 used 0.7)")


class TaskSpec(_Strict):
    name: str
    kind: Kind
    description: str = ""
    labels: list[str] = Field(default_factory=list, max_length=MAX_LABELS,
                              description=f"class labels, or entity types for ner (at most {MAX_LABELS:,}, each at "
                                          f"most {MAX_LABEL_CHARS} characters, printable, no surrounding spaces)")
    sources: dict[str, SourceSpec]
    prompts: PromptSpec = Field(default_factory=lambda: PromptSpec(default="plain", versions={"plain": ""}))
    target: str = "{label}"
    extraction: ExtractionSpec = Field(default_factory=ExtractionSpec)
    base_instruction: str | None = Field(
        None, description="prepended to the user turn when a base (not fine-tuned) model is evaluated, "
                          "e.g. how to answer (S3 prepends one)")
    base_extraction: ExtractionSpec | None = Field(
        None, description="extraction steps for base-model answers (free text); default: `extraction` "
                          "followed by the first label mentioned anywhere in the answer")
    metrics: list[str] | None = Field(None, description="metrics to report; the first is the headline")
    cleaning: CleaningSpec = Field(default_factory=CleaningSpec)
    _path: Path | None = PrivateAttr(None)
    _text: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _labels_known(self) -> TaskSpec:
        if self.metrics is None:
            self.metrics = list(METRICS[self.kind][:2])
        unknown = [m for m in self.metrics if m not in METRICS[self.kind]]
        if unknown:
            raise ValueError(f"metrics: {unknown[0]!r} is not a {self.kind} metric "
                             f"(expected {', '.join(METRICS[self.kind]) or 'none'})")
        bad = [p for p in PLACEHOLDER.findall(self.target) if p not in ("label", "index")]
        if bad:
            raise ValueError(f"target: placeholder {{{bad[0]}}} is unknown (expected {{label}} or {{index}})")
        if not self.sources:
            raise ValueError("sources: at least one source format is needed")
        if self.kind in ("classification", "pair_classification", "ner") and len(self.labels) < 2 \
                and self.kind != "ner":
            raise ValueError(f"labels: a {self.kind} task needs at least 2 labels, got {len(self.labels)}")
        if self.kind == "ner" and not self.labels:
            raise ValueError("labels: an ner task lists its entity types here")
        for fmt, src in self.sources.items():
            if self.kind in ("classification", "pair_classification") and not src.label_column:
                raise ValueError(f"sources.{fmt}.label_column: required for a {self.kind} task")
            for raw, name in (src.label_map or {}).items():
                if name not in self.labels:
                    raise ValueError(f"sources.{fmt}.label_map: {raw!r}: {name!r} is not one of the labels "
                                     f"{self.labels[:10]}{' ...' if len(self.labels) > 10 else ''}")
        if len(set(self.labels)) != len(self.labels):
            seen: set[str] = set()
            dup = next(lab for lab in self.labels if lab in seen or seen.add(lab))
            raise ValueError(f"labels: must be unique ({dup[:60]!r} appears twice)")
        folded: dict[str, str] = {}
        for lab in self.labels:
            if not lab.strip():
                raise ValueError(f"labels: {lab!r} is empty (an empty answer could not be told from no answer)")
            if lab.strip().casefold() == INVALID_LABEL:
                raise ValueError(f"labels: {lab!r} is the name ftk gives an unparseable answer (choose another)")
            if len(lab) > MAX_LABEL_CHARS:
                raise ValueError(f"labels: {lab[:40]!r}... has {len(lab):,} characters (at most {MAX_LABEL_CHARS}: "
                                 "a label is an answer the model writes and every prompt reserves room for)")
            if lab != lab.strip():
                raise ValueError(f"labels: {lab!r} has surrounding whitespace (answers are stripped before they are "
                                 "matched, so it could never be answered exactly)")
            bad = next((c for c in lab if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
            if bad is not None:
                raise ValueError(f"labels: {lab!r} holds the control or format character {bad!r} (a label is one "
                                 "line of printable text)")
            key = " ".join(lab.split()).casefold()
            if key in folded:
                raise ValueError(f"labels: {folded[key]!r} and {lab!r} differ only by case or spacing (answers are "
                                 f"matched without either)")
            folded[key] = lab
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

    def extraction_for(self, base: bool = False) -> ExtractionSpec:
        """The extraction a model's answers go through. Base models answer in free text: their own
        steps when the task sets `base_extraction` (the `label` and `number_or_label` steps already
        take the first label mentioned anywhere in the answer)."""
        return self.base_extraction if base and self.base_extraction is not None else self.extraction

    @property
    def path(self) -> Path | None:
        """The task YAML this task was read from (None when built in code)."""
        return self._path

    @property
    def yaml_text(self) -> str | None:
        return self._text

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self._text.encode("utf-8")).hexdigest() if self._text is not None else None


def builtin_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def load_task(name_or_path: str | Path) -> TaskSpec:
    """Load a built-in task by name, or a task YAML by path.

    >>> load_task("agnews").labels
    ['World', 'Sports', 'Business', 'Sci/Tech']

    The task keeps its file's path and text (`task.path`, `task.yaml_text`, `task.sha256`) so a
    run directory can hold a copy and errors can name the file.
    """
    builtins = builtin_tasks()
    path = Path(name_or_path)
    if str(name_or_path) in builtins:
        path = builtins[str(name_or_path)]
    elif path.suffix not in (".yaml", ".yml") or not path.exists():
        close = difflib.get_close_matches(str(name_or_path), list(builtins), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        missing = "a task YAML that does not exist" if path.suffix in (".yaml", ".yml") else "not a built-in task"
        raise FtkError(f"unknown task {str(name_or_path)!r}: {missing} "
                       f"(expected one of {', '.join(builtins)} or a task YAML path){hint}")
    task = read_model(path, TaskSpec, "task file")
    task._path = path
    task._text = path.read_text(encoding="utf-8-sig")
    return task
