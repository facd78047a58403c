"""Readers for raw dataset formats -> examples.

A reader turns one file (or hub split) into raw rows; `to_example` turns a row into an `Example`
according to the task's kind. Every malformed row is collected as a `Malformed` (file, line,
kind, reason) instead of being dropped silently; rows with an empty required field are counted
as cleaning (`empty`), not as malformed.
"""

from __future__ import annotations

import csv
import re
import string
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftk.data import shopbench, spans
from ftk.data.task import SourceSpec, TaskSpec
from ftk.errors import FtkError
from ftk.fileio import iter_jsonl

HUB_PREFIX = "hub:"
_UNDECODABLE = re.compile("[\udc80-\udcff]")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Example:
    line: int
    input: str
    target: str
    label: str | None = None  # class label; task type for shopbench; None for ner / pretrain
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Malformed:
    path: str
    line: int
    kind: str  # short code for counting: unknown_label, wrong_column_count, ...
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class ReadResult:
    source: str
    examples: list[Example] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    empty: list[Malformed] = field(default_factory=list)


class _Collector:
    """Turns raw rows into examples for one task/source, collecting problems."""

    def __init__(self, task: TaskSpec, spec: SourceSpec, out: ReadResult, strict: bool):
        self.task, self.spec, self.out, self.strict = task, spec, out, strict

    def bad(self, path: str, line: int, kind: str, reason: str) -> None:
        m = Malformed(path, line, kind, reason)
        if self.strict:
            raise FtkError(reason + " (--strict stops at the first malformed row)", path=path, where=str(line))
        self.out.malformed.append(m)

    def row(self, row: dict[str, Any], path: str, line: int) -> None:
        kind = self.task.kind
        # Files are read with errors="surrogateescape": bytes that do not decode show up here.
        for value in row.values():
            for v in (value if isinstance(value, list) else [value]):
                if isinstance(v, str) and _UNDECODABLE.search(v):
                    self.bad(path, line, "undecodable", f"bytes that are not valid {self.spec.encoding}")
                    return
        for col in self.spec.required:
            if not str(row.get(col) or "").strip():
                self.out.empty.append(Malformed(path, line, "empty", f"empty required field {col!r}"))
                return
        if kind in ("classification", "pair_classification"):
            self._classification(row, path, line)
        elif kind == "ner":
            self._ner(row, path, line)
        elif kind == "shopbench":
            self._shopbench(row, path, line)
        else:
            text = self._format(row, path, line)
            if text is not None:
                self.out.examples.append(Example(line=line, input=text, target=""))

    def _format(self, row: dict[str, Any], path: str, line: int) -> str | None:
        try:
            return self.spec.input.format(**{k: ("" if v is None else str(v)) for k, v in row.items()}).strip()
        except KeyError as exc:
            self.bad(path, line, "missing_column", f"missing column {exc.args[0]!r}")
            return None

    def _classification(self, row: dict[str, Any], path: str, line: int) -> None:
        col = self.spec.label_column
        raw = row.get(col)
        if raw is None:
            self.bad(path, line, "missing_label", f"missing label column {col!r}")
            return
        raw = str(raw).strip()
        if self.spec.label_map is not None:
            label = self.spec.label_map.get(raw)
            allowed = ", ".join(self.spec.label_map)
        else:
            label = raw if raw in self.task.labels else None
            allowed = ", ".join(self.task.labels)
        if label is None:
            self.bad(path, line, "unknown_label", f"{col} {raw!r} is not one of {allowed}")
            return
        text = self._format(row, path, line)
        if text is not None:
            self.out.examples.append(Example(line=line, input=text, target=self.task.target_for(label), label=label))

    def _ner(self, row: dict[str, Any], path: str, line: int) -> None:
        if "tags" in row:
            tokens, tags = row["tokens"], row["tags"]
        else:  # a hub row: integer tag ids
            names = self.spec.tag_names or []
            tokens = row.get(self.spec.tokens_column) or []
            try:
                tags = [names[int(t)] if names else str(t) for t in row.get(self.spec.tags_column) or []]
            except (IndexError, ValueError):
                self.bad(path, line, "unknown_label", f"tag ids outside tag_names {names}")
                return
        types = set(self.task.labels)
        for tag in tags:
            prefix, _, typ = tag.partition("-")
            if tag != "O" and (prefix not in ("B", "I") or typ not in types):
                self.bad(path, line, "unknown_label", f"tag {tag!r} is not O or B-/I- of {sorted(types)}")
                return
        self.out.examples.append(Example(line=line, input=" ".join(tokens),
                                         target=spans.target_for_tags(tokens, tags),
                                         meta={"tokens": list(tokens), "tags": list(tags)}))

    def _shopbench(self, row: dict[str, Any], path: str, line: int) -> None:
        task_type = row.get("task_type")
        if task_type not in shopbench.TASK_TYPES:
            self.bad(path, line, "unknown_label", f"task_type {task_type!r} is not one of {shopbench.TASK_TYPES}")
            return
        gold = row.get(self.spec.gold_column or "output_field")
        try:
            target = shopbench.target(task_type, gold)
        except (TypeError, ValueError):
            self.bad(path, line, "bad_gold", f"output_field {gold!r} does not fit task_type {task_type!r}")
            return
        text = self._format(row, path, line)
        if text is not None:
            self.out.examples.append(Example(line=line, input=text, target=target, label=task_type,
                                             meta={"task_type": task_type, "metric": row.get("metric"),
                                                   "gold": gold}))


def _read_delimited(c: _Collector, path: Path) -> None:
    spec = c.spec
    delimiter = spec.delimiter or ("\t" if spec.reader == "tsv" else ",")
    quoting = csv.QUOTE_MINIMAL if spec.quoting else csv.QUOTE_NONE
    with open(path, encoding=spec.encoding, newline="", errors="surrogateescape") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
        columns = spec.columns
        header_pending = spec.header
        prev_end = 0
        for row in reader:
            start = prev_end + 1
            prev_end = reader.line_num
            if row:
                row[0] = row[0].lstrip("\ufeff") if start == 1 else row[0]
            if header_pending:
                header_pending = False
                if columns is None:
                    columns = [col.strip() for col in row]
                continue  # `columns`, when given, renames the header positionally
            if columns is None:
                raise FtkError("source has no header and no `columns`", path=path)
            if not row or all(not x.strip() for x in row):
                c.bad(str(path), start, "empty_row", "empty row")
                continue
            if len(row) != len(columns):
                c.bad(str(path), start, "wrong_column_count",
                      f"expected {len(columns)} columns {columns}, found {len(row)}")
                continue
            c.row(dict(zip(columns, row)), str(path), start)


def _read_jsonl(c: _Collector, path: Path) -> None:
    for lineno, row, problem in iter_jsonl(path, c.spec.encoding, errors="surrogateescape"):
        if problem:
            c.bad(str(path), lineno, "not_json", problem)
        else:
            c.row(row, str(path), lineno)


def _read_at_lines(c: _Collector, path: Path) -> None:
    """`text<sep>label` per line (Financial PhraseBank), split at the last separator."""
    with open(path, encoding=c.spec.encoding, newline="", errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            text, sep, label = line.rpartition(c.spec.separator)
            if not sep:
                c.bad(str(path), lineno, "missing_separator", f"no {c.spec.separator!r} separator")
                continue
            c.row({"text": text.strip(), "label": label.strip()}, str(path), lineno)


def _read_iob2(c: _Collector, path: Path) -> None:
    """Token<TAB>tag lines, blank line between sentences; `###...` and -DOCSTART- lines are boundaries."""
    tokens: list[str] = []
    tags: list[str] = []
    first = 0

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            c.row({"tokens": tokens, "tags": tags}, str(path), first)
        tokens, tags = [], []

    with open(path, encoding=c.spec.encoding, errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("###") or line.startswith("-DOCSTART-"):
                flush()
                continue
            parts = line.split("\t")
            if len(parts) < 2 or not parts[0]:
                c.bad(str(path), lineno, "missing_separator", "expected token<TAB>tag")
                continue
            if not tokens:
                first = lineno
            tokens.append(parts[0])
            tags.append(parts[-1].strip())
        flush()


def _read_text(c: _Collector, path: Path) -> None:
    with open(path, encoding=c.spec.encoding, errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                c.row({"text": line.strip()}, str(path), lineno)


SUFFIX_READER = {"txt": "text", "json": "jsonl", "jsonl": "jsonl", "csv": "csv", "tsv": "tsv", "iob2": "iob2"}
READERS = {"csv": _read_delimited, "tsv": _read_delimited, "jsonl": _read_jsonl,
           "at_lines": _read_at_lines, "iob2": _read_iob2, "text": _read_text}


def _read_hub(c: _Collector, hub_id: str, split: str) -> None:
    import datasets  # heavy import, only when the hub is used

    try:
        ds = datasets.load_dataset(hub_id, c.spec.config, split=split)
    except Exception as exc:  # network, missing split, auth: all user-facing
        raise FtkError(f"could not load hub dataset {hub_id!r} split {split!r}: {exc}") from None
    for i, row in enumerate(ds, 1):
        c.row(dict(row), f"hub:{hub_id}", i)


def read_source(task: TaskSpec, source: str, split: str, fmt: str | None = None, *,
                strict: bool = False) -> ReadResult:
    """Read one split from a local file or `hub:<id>[:<split>]`.

    The task's source format is `fmt`, else chosen by the file suffix (`.csv` -> a csv format),
    else the task's only local format.
    """
    out = ReadResult(source=source)
    if source.startswith(HUB_PREFIX):
        hub_id, _, hub_split = source[len(HUB_PREFIX):].partition(":")
        spec = task.sources.get(fmt or "hub")
        if spec is None or spec.reader != "hub":
            raise FtkError(f"task {task.name!r} declares no hub source", where="sources")
        _read_hub(_Collector(task, spec, out, strict), hub_id or spec.path or "",
                  hub_split or spec.splits.get(split, split))
        return out

    path = Path(source)
    if not path.is_file():
        raise FtkError("data file not found", path=path)
    spec = _pick_local_spec(task, path, fmt)
    if spec.reader == "hub":
        raise FtkError(f"format {fmt!r} is a hub format; give hub:<id> as the source", path=path)
    READERS[spec.reader](_Collector(task, spec, out, strict), path)
    return out


def _pick_local_spec(task: TaskSpec, path: Path, fmt: str | None) -> SourceSpec:
    if fmt:
        if fmt not in task.sources:
            raise FtkError(f"task {task.name!r} has no source format {fmt!r}; "
                           f"expected one of {sorted(task.sources)}", path=path)
        return task.sources[fmt]
    local = {k: v for k, v in task.sources.items() if v.reader != "hub"}
    if len(local) == 1:
        return next(iter(local.values()))
    suffix = path.suffix.lstrip(".").lower()
    reader = SUFFIX_READER.get(suffix, suffix)
    matches = [spec for name, spec in local.items() if name == suffix or spec.reader == reader]
    if len(matches) == 1:
        return matches[0]
    raise FtkError(f"cannot tell which source format of task {task.name!r} this file is; "
                   f"pass one of {sorted(local)} (--format)", path=path)


def fields_in(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def iter_lines(paths: Iterable[str | Path]) -> Iterator[str]:
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as fh:
            yield from fh
