"""Readers for raw dataset formats: one file (or hub split) -> rows -> examples (data/rows.py).

`read_source` picks the task's source format for a file (by name, suffix or the only one), checks
that the file is readable text, and runs that format's reader; every reader counts each data row
once (`rows_read`) and reports its own malformed rows with their line numbers.
"""

from __future__ import annotations

import contextlib
import csv
import os
import string
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from ftk.data.rows import Collector, Enough, ReadResult
from ftk.data.task import SourceSpec, TaskSpec
from ftk.errors import FtkError
from ftk.fileio import iter_jsonl

HUB_PREFIX = "hub:"
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def _read_delimited(c: Collector, path: Path) -> None:
    """CSV/TSV rows with csv's own quoting rules. A record whose quoted field runs over
    `max_record_lines` lines, to the end of the file, or into a wrong column count, is one malformed
    row at its first line, and reading resumes on the next line: no row is swallowed uncounted."""
    spec = c.spec
    delimiter = spec.delimiter or ("\t" if spec.reader == "tsv" else ",")
    quoting = csv.QUOTE_MINIMAL if spec.quoting else csv.QUOTE_NONE
    with open(path, encoding=spec.encoding, newline="", errors="surrogateescape") as fh:
        lines = fh.readlines()
    if lines:
        lines[0] = lines[0].lstrip("\ufeff")
    columns = spec.columns
    header_pending = spec.header
    checked = False
    i, n = 0, len(lines)
    while i < n:
        reader = csv.reader(lines[i:] if i else lines, delimiter=delimiter, quoting=quoting)
        prev, restart = 0, False
        for row in reader:
            used, prev = reader.line_num - prev, reader.line_num
            start = i + 1
            if header_pending:
                header_pending = False
                if columns is None:
                    columns = [col.strip() for col in row]
                i += used
                continue  # `columns`, when given, renames the header positionally
            if columns is None:
                raise FtkError(f"source has no header and no `sources.{c.fmt}.columns`", path=path)
            if not checked:
                c.check_columns(columns, path, "header" if spec.header and spec.columns is None else "columns")
                checked = True
            if not row or all(not x.strip() for x in row):
                i += used  # a blank line is no row
                continue
            at_eof_open = spec.quoting and i + used >= n and "".join(lines[i:i + used]).count('"') % 2
            if at_eof_open or used > 1 and (used > spec.max_record_lines or len(row) != len(columns)):
                why = ("runs to the end of the file" if at_eof_open else
                       f"spans {used} lines" if used > spec.max_record_lines else
                       f"spans {used} lines into {len(row)} columns")
                c.bad(str(path), start, "unterminated_quote",
                      f"a quoted field opened here {why} (unterminated quote?)")
                i, restart = i + 1, True
                break
            i += used
            if len(row) != len(columns):
                c.bad(str(path), start, "wrong_column_count",
                      f"expected {len(columns)} columns {columns}, found {len(row)}")
                continue
            c.row(dict(zip(columns, row)), str(path), start)
        if not restart:
            break


def _read_jsonl(c: Collector, path: Path) -> None:
    checked = False
    for lineno, row, problem in iter_jsonl(path, c.spec.encoding, errors="surrogateescape"):
        if problem:
            c.bad(str(path), lineno, "not_json", problem)
            continue
        if not checked:
            c.check_columns(list(row), path, f"first record (line {lineno})")
            checked = True
        c.row(row, str(path), lineno)


def _read_at_lines(c: Collector, path: Path) -> None:
    """`text<sep>label` per line (Financial PhraseBank), split at the last separator."""
    c.check_columns(["text", "label"], path, "columns (at_lines rows have text and label)")
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


def _read_iob2(c: Collector, path: Path) -> None:
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


def _read_text(c: Collector, path: Path) -> None:
    c.check_columns(["text"], path, "columns (text rows have text)")
    with open(path, encoding=c.spec.encoding, errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                c.row({"text": line.strip()}, str(path), lineno)


SUFFIX_READER = {"txt": "text", "json": "jsonl", "jsonl": "jsonl", "csv": "csv", "tsv": "tsv", "iob2": "iob2"}
READERS = {"csv": _read_delimited, "tsv": _read_delimited, "jsonl": _read_jsonl,
           "at_lines": _read_at_lines, "iob2": _read_iob2, "text": _read_text}


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the Hub's host (HF_ENDPOINT when set): decides once, in seconds, what
    the Hub clients would find out after minutes of retry lines on the terminal."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline():
    """The Hub libraries in offline mode for the block (their import-time flags, then back)."""
    import datasets.config
    import huggingface_hub.constants

    was = (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = was


def _read_hub(c: Collector, hub_id: str, split: str) -> None:
    import datasets  # heavy import, only when the hub is used

    offline = datasets.config.HF_HUB_OFFLINE or not hub_reachable()  # no Hub: the local cache only
    try:
        with hub_offline() if offline else contextlib.nullcontext():
            ds = datasets.load_dataset(hub_id, c.spec.config, split=split)
    except Exception as exc:  # network, missing split, auth: all user-facing
        if offline:
            raise FtkError(f"hub dataset {hub_id!r} split {split!r}: the Hub is unreachable (offline or "
                           "HF_HUB_OFFLINE) and the dataset is not in the local Hugging Face cache; download it "
                           "where there is internet, or give a local file") from None
        raise FtkError(f"could not load hub dataset {hub_id!r} split {split!r}: {exc}") from None
    for i, row in enumerate(ds, 1):
        c.row(dict(row), f"hub:{hub_id}", i)


def read_source(task: TaskSpec, source: str, split: str, fmt: str | None = None, *,
                strict: bool = False, max_rows: int | None = None, keep_raw: bool = False) -> ReadResult:
    """Read one split from a local file or `hub:<id>[:<split>]` (its first `max_rows` rows only,
    when given: enough to check the file and its columns against the task).

    The task's source format is `fmt`, else chosen by the file suffix (`.csv` -> a csv format),
    else the task's only local format.
    """
    out = ReadResult(source=source)
    if source.startswith(HUB_PREFIX):
        hub_id, _, hub_split = source[len(HUB_PREFIX):].partition(":")
        spec = task.sources.get(fmt or "hub")
        if spec is None or spec.reader != "hub":
            raise FtkError(f"task {task.name!r} declares no hub source", where="sources")
        _read_hub(Collector(task, spec, out, strict, fmt or "hub"), hub_id or spec.path or "",
                  hub_split or spec.splits.get(split, split))
        return out

    path = Path(source)
    check_text_file(path)
    name, spec = pick_local_spec(task, path, fmt)
    if spec.reader == "hub":
        raise FtkError(f"format {name!r} is a hub format; give hub:<id> as the source", path=path)
    collector = Collector(task, spec, out, strict, name)
    collector.max_rows, collector.keep_raw = max_rows, keep_raw
    try:
        READERS[spec.reader](collector, path)
    except Enough:
        pass
    except UnicodeDecodeError as exc:  # only a codec without surrogateescape support gets here
        raise FtkError(f"not {spec.encoding} text ({exc.reason})", path=path) from None
    return out


def check_text_file(path: Path) -> None:
    """A data file that exists, is readable and is text (not binary): else one FtkError."""
    if not path.exists():
        raise FtkError("data file not found", path=path)
    if not path.is_file():
        raise FtkError("data source is not a file (expected a data file or hub:<id>)", path=path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError as exc:
        raise FtkError(f"cannot read data file: {exc.strerror}", path=path) from None
    if b"\x00" in head:
        raise FtkError("binary file (NUL bytes); expected a text data file", path=path)


def pick_local_spec(task: TaskSpec, path: Path, fmt: str | None) -> tuple[str, SourceSpec]:
    if fmt:
        if fmt not in task.sources:
            raise FtkError(f"task {task.name!r} has no source format {fmt!r}; "
                           f"expected one of {sorted(task.sources)}", path=path)
        return fmt, task.sources[fmt]
    local = {k: v for k, v in task.sources.items() if v.reader != "hub"}
    if not local:
        raise FtkError(f"task {task.name!r} has only hub sources; give hub:<id> instead of a file", path=path)
    if len(local) == 1:
        return next(iter(local.items()))
    suffix = path.suffix.lstrip(".").lower()
    reader = SUFFIX_READER.get(suffix, suffix)
    matches = [(name, spec) for name, spec in local.items() if name == suffix or spec.reader == reader]
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
