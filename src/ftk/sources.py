"""Readers for raw dataset formats -> examples.

Every reader yields `Example`s (source line, label name, input text) and collects each malformed
row as a `Malformed` (file, line, reason) instead of dropping it silently; the caller decides to
fail or to count them in the manifest.
"""

from __future__ import annotations

import csv
import json
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ftk.errors import FtkError
from ftk.tasks import SourceSpec, TaskSpec

HUB_PREFIX = "hub:"


@dataclass(frozen=True)
class Example:
    line: int
    label: str
    input: str


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


def _fields_in(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _to_example(spec: SourceSpec, task: TaskSpec, row: dict[str, str], path: str, line: int,
                out: ReadResult) -> None:
    raw_label = row.get(spec.label_column)
    if raw_label is None:
        out.malformed.append(Malformed(path, line, "missing_label", f"missing label column {spec.label_column!r}"))
        return
    raw_label = str(raw_label).strip()
    if spec.label_map is not None:
        label = spec.label_map.get(raw_label)
        if label is None:
            allowed = ", ".join(spec.label_map)
            out.malformed.append(Malformed(
                path, line, "unknown_label", f"{spec.label_column} {raw_label!r} is not one of {allowed}"))
            return
    else:
        label = raw_label
        if label not in task.labels:
            out.malformed.append(Malformed(
                path, line, "unknown_label",
                f"{spec.label_column} {raw_label!r} is not one of {', '.join(task.labels)}"))
            return
    for col in spec.required:
        if not str(row.get(col) or "").strip():
            out.malformed.append(Malformed(path, line, "empty_required_field", f"empty required field {col!r}"))
            return
    try:
        text = spec.input.format(**{k: ("" if v is None else str(v)) for k, v in row.items()})
    except KeyError as exc:
        out.malformed.append(Malformed(path, line, "missing_column", f"missing column {exc.args[0]!r}"))
        return
    out.examples.append(Example(line=line, label=label, input=text.strip()))


def _read_delimited(spec: SourceSpec, task: TaskSpec, path: Path, out: ReadResult) -> None:
    delimiter = spec.delimiter or ("\t" if spec.reader == "tsv" else ",")
    try:
        fh = open(path, encoding=spec.encoding, newline="")
        with fh:
            reader = csv.reader(fh, delimiter=delimiter)
            columns = spec.columns
            prev_end = 0
            for row in reader:
                start = prev_end + 1
                prev_end = reader.line_num
                if columns is None:
                    if spec.header:
                        columns = [c.strip().lstrip("\ufeff") for c in row]
                        continue
                if not row or all(not c.strip() for c in row):
                    out.malformed.append(Malformed(str(path), start, "empty_row", "empty row"))
                    continue
                if len(row) != len(columns):
                    out.malformed.append(Malformed(
                        str(path), start, "wrong_column_count", f"expected {len(columns)} columns {columns}, found {len(row)}"))
                    continue
                _to_example(spec, task, dict(zip(columns, row)), str(path), start, out)
    except UnicodeDecodeError as exc:
        raise FtkError(f"cannot decode as {spec.encoding}: {exc.reason} at byte {exc.start}", path=path) from None


def _read_jsonl(spec: SourceSpec, task: TaskSpec, path: Path, out: ReadResult) -> None:
    with open(path, encoding=spec.encoding) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                out.malformed.append(Malformed(str(path), lineno, "not_json", f"not JSON: {exc.msg}"))
                continue
            if not isinstance(row, dict):
                out.malformed.append(Malformed(str(path), lineno, "not_json", "expected a JSON object"))
                continue
            _to_example(spec, task, row, str(path), lineno, out)


def _read_hub(spec: SourceSpec, task: TaskSpec, hub_id: str, split: str, out: ReadResult) -> None:
    import datasets  # heavy import, only when the hub is used

    try:
        ds = datasets.load_dataset(hub_id, spec.config, split=split)
    except Exception as exc:  # network, missing split, auth: all user-facing
        raise FtkError(f"could not load hub dataset {hub_id!r} split {split!r}: {exc}") from None
    for i, row in enumerate(ds, 1):
        _to_example(spec, task, row, f"hub:{hub_id}", i, out)


def read_source(task: TaskSpec, source: str, split: str, fmt: str | None = None) -> ReadResult:
    """Read one split from a local file or `hub:<id>[:<split>]`.

    The task's source format is chosen by `fmt`, else by the file suffix (`.csv` -> `csv`),
    else the task's only local format.
    """
    out = ReadResult(source=source)
    if source.startswith(HUB_PREFIX):
        rest = source[len(HUB_PREFIX):]
        hub_id, _, hub_split = rest.partition(":")
        spec = task.sources.get(fmt or "hub")
        if spec is None or spec.reader != "hub":
            raise FtkError(f"task {task.name!r} declares no hub source", where="sources")
        _read_hub(spec, task, hub_id or spec.path or "", hub_split or split, out)
        return out

    path = Path(source)
    if not path.is_file():
        raise FtkError("data file not found", path=path)
    spec = _pick_local_spec(task, path, fmt)
    if spec.reader in ("csv", "tsv"):
        _read_delimited(spec, task, path, out)
    elif spec.reader == "jsonl":
        _read_jsonl(spec, task, path, out)
    else:
        raise FtkError(f"format {fmt!r} is a hub format; give hub:<id> as the source", path=path)
    return out


def _pick_local_spec(task: TaskSpec, path: Path, fmt: str | None) -> SourceSpec:
    if fmt:
        if fmt not in task.sources:
            raise FtkError(f"task {task.name!r} has no source format {fmt!r}; "
                           f"expected one of {sorted(task.sources)}", path=path)
        return task.sources[fmt]
    local = {k: v for k, v in task.sources.items() if v.reader != "hub"}
    by_suffix = path.suffix.lstrip(".").lower()
    for name, spec in local.items():
        if spec.reader == by_suffix or name == by_suffix:
            return spec
    if len(local) == 1:
        return next(iter(local.values()))
    raise FtkError(f"cannot tell which source format of task {task.name!r} this file is; "
                   f"pass one of {sorted(local)}", path=path)


def input_fields(spec: SourceSpec) -> list[str]:
    return _fields_in(spec.input)


def iter_lines(paths: Iterable[str | Path]) -> Iterator[str]:
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as fh:
            yield from fh
