"""Raw rows -> examples for one task and source format: the row-level rules every reader shares.

A row becomes an `Example` according to the task's kind; every problem is collected as a
`Malformed` (file, line, kind, reason) instead of being dropped silently; rows with an empty
required field are counted as cleaning (`empty`), not as malformed. A column the task YAML names
but the file lacks is the task YAML's error, named by key (`check_columns`).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftk.data import shopbench, spans
from ftk.data.task import SourceSpec, TaskSpec
from ftk.errors import FtkError

_UNDECODABLE = re.compile("[\udc80-\udcff]")


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
    rows_read: int = 0  # every data row of the source: usable, empty and malformed
    raw_labels: Counter = field(default_factory=Counter)  # unknown label values seen, for diagnosis


class Enough(Exception):
    """Stops a reader once `max_rows` rows are read (header checks read one row)."""


class Collector:
    """Turns raw rows into examples for one task/source, collecting problems."""

    max_rows: int | None = None
    keep_raw: bool = False  # keep each row's raw columns in Example.meta["raw"] (synthetic-data seeds)

    def __init__(self, task: TaskSpec, spec: SourceSpec, out: ReadResult, strict: bool, fmt: str = "?"):
        self.task, self.spec, self.out, self.strict, self.fmt = task, spec, out, strict, fmt

    def needed_columns(self) -> dict[str, list[str]]:
        """Task-YAML key -> the columns it names, which every row of this source must have."""
        s, kind = self.spec, self.task.kind
        need: dict[str, list[str]] = {"input": s.fields(), "required": list(s.required)}
        if kind in ("classification", "pair_classification") and s.label_column:
            need["label_column"] = [s.label_column]
        if s.id_column:
            need["id_column"] = [s.id_column]
        if kind == "shopbench":
            need["gold_column"] = [s.gold_column or "output_field"]
        return need

    def check_columns(self, columns: list[str], path: str | Path, what: str = "header") -> None:
        """A column the task YAML names but the file lacks is the task YAML's error, named by key."""
        have = set(columns)
        for key, cols in self.needed_columns().items():
            for col in cols:
                if col not in have:
                    close = difflib.get_close_matches(col, columns, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise FtkError(f"column {col!r} is not in the {what} of {path} (columns: {', '.join(columns)})"
                                   f"{hint}", path=self.task.path or path, where=f"sources.{self.fmt}.{key}")

    def bad(self, path: str, line: int, kind: str, reason: str) -> None:
        """A reader found a malformed row (counted as a row read)."""
        self.out.rows_read += 1
        self._reject(path, line, kind, reason)

    def _reject(self, path: str, line: int, kind: str, reason: str) -> None:
        m = Malformed(path, line, kind, reason)
        if self.strict:
            raise FtkError(reason + " (--strict stops at the first malformed row)", path=path, where=str(line))
        self.out.malformed.append(m)

    def row(self, row: dict[str, Any], path: str, line: int) -> None:
        if self.max_rows is not None and self.out.rows_read >= self.max_rows:
            raise Enough
        self.out.rows_read += 1
        kind = self.task.kind
        # Files are read with errors="surrogateescape": bytes that do not decode show up here.
        for value in row.values():
            for v in (value if isinstance(value, list) else [value]):
                if isinstance(v, str) and _UNDECODABLE.search(v):
                    self._reject(path, line, "undecodable", f"bytes that are not valid {self.spec.encoding}")
                    return
        for col in self.spec.required:
            if col not in row:
                self._reject(path, line, "missing_column", f"missing column {col!r}")
                return
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
            self._reject(path, line, "missing_column", f"missing column {exc.args[0]!r}")
            return None

    def _meta(self, row: dict[str, Any]) -> dict[str, Any]:
        """The source's own row id, when the task names an id column."""
        col = self.spec.id_column
        return {"source_id": str(row.get(col))} if col and row.get(col) is not None else {}

    def _classification(self, row: dict[str, Any], path: str, line: int) -> None:
        col = self.spec.label_column
        raw = row.get(col)
        if raw is None:
            self._reject(path, line, "missing_label", f"missing label column {col!r}")
            return
        raw = str(raw).strip()
        if self.spec.label_map is not None:
            label = self.spec.label_map.get(raw)
            allowed = ", ".join(self.spec.label_map)
        else:
            label = raw if raw in self.task.labels else None
            allowed = ", ".join(self.task.labels)
        if label is None:
            self.out.raw_labels[raw] += 1
            self._reject(path, line, "unknown_label", f"{col} {raw!r} is not one of {allowed}")
            return
        text = self._format(row, path, line)
        if text is not None:
            meta = self._meta(row)
            if self.keep_raw:
                meta["raw"] = {k: ("" if v is None else str(v)) for k, v in row.items()}
            self.out.examples.append(Example(line=line, input=text, target=self.task.target_for(label), label=label,
                                             meta=meta))

    def _ner(self, row: dict[str, Any], path: str, line: int) -> None:
        if "tags" in row:
            tokens, tags = row["tokens"], row["tags"]
        else:  # a hub row: integer tag ids
            names = self.spec.tag_names or []
            tokens = row.get(self.spec.tokens_column) or []
            try:
                tags = [names[int(t)] if names else str(t) for t in row.get(self.spec.tags_column) or []]
            except (IndexError, ValueError):
                self._reject(path, line, "unknown_label", f"tag ids outside tag_names {names}")
                return
        types = set(self.task.labels)
        for tag in tags:
            prefix, _, typ = tag.partition("-")
            if tag != "O" and (prefix not in ("B", "I") or typ not in types):
                self._reject(path, line, "unknown_label", f"tag {tag!r} is not O or B-/I- of {sorted(types)}")
                return
        self.out.examples.append(Example(line=line, input=" ".join(tokens),
                                         target=spans.target_for_tags(tokens, tags),
                                         meta={"tokens": list(tokens), "tags": list(tags)}))

    def _shopbench(self, row: dict[str, Any], path: str, line: int) -> None:
        task_type = row.get("task_type")
        if task_type not in shopbench.TASK_TYPES:
            self._reject(path, line, "unknown_label", f"task_type {task_type!r} is not one of {shopbench.TASK_TYPES}")
            return
        gold = row.get(self.spec.gold_column or "output_field")
        try:
            target = shopbench.target(task_type, gold)
        except (TypeError, ValueError):
            self._reject(path, line, "bad_gold", f"output_field {gold!r} does not fit task_type {task_type!r}")
            return
        text = self._format(row, path, line)
        if text is not None:
            self.out.examples.append(Example(line=line, input=text, target=target, label=task_type,
                                             meta={"task_type": task_type, "metric": row.get("metric"),
                                                   "gold": gold}))
