"""Predictions files: ftk's own, appended per batch and resumed (`read_done`, `write_rows`), and reading
 ftk's own (id, label, predict[, prompt]) and LLaMA-Factory's
`generated_predictions.jsonl` (prompt, predict, label; no id, matched to the data by order).

Every problem is an `FtkError` naming the file and the line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ftk.errors import FtkError
from ftk.fileio import atomic_open, iter_jsonl

PREDICTIONS = "predictions.jsonl"


def read_prediction_rows(path: str | Path) -> tuple[list[dict], str]:
    """Rows of a predictions JSONL and its format: "ftk" (rows carry `id`) or "llamafactory"."""
    path = Path(path)
    if not path.is_file():
        raise FtkError("predictions file not found", path=path)
    rows: list[dict] = []
    fmt = None
    for lineno, row, problem in iter_jsonl(path):
        if problem:
            raise FtkError(problem, path=path, where=str(lineno))
        row_fmt = "ftk" if "id" in row else "llamafactory"
        fmt = fmt or row_fmt
        if row_fmt != fmt:
            raise FtkError("mixes rows with and without `id`", path=path, where=str(lineno))
        required = ("id", "predict") if fmt == "ftk" else ("predict", "label")
        for key in required:
            if key not in row:
                raise FtkError(f"missing field `{key}` (expected {', '.join(required)})",
                               path=path, where=str(lineno))
        if not isinstance(row["predict"], str):
            raise FtkError("field `predict` must be a string", path=path, where=str(lineno))
        row["_line"] = lineno
        rows.append(row)
    if not rows:
        raise FtkError("no predictions in file", path=path)
    return rows, fmt or "ftk"


def gold_of(record: dict):
    """What a prediction row shows as its gold: the label, or the target for open-ended tasks."""
    return record.get("label", record.get("output"))


def align(rows: list[dict], fmt: str, records: list[dict], path: str | Path, data_path: str | Path) -> dict[str, dict]:
    """Predictions keyed by record id: by id for ftk rows, by order for LLaMA-Factory rows."""
    if fmt == "llamafactory":
        if len(rows) != len(records):
            raise FtkError(f"{len(rows)} predictions but the prepared split {data_path} has {len(records)} rows "
                           "(LLaMA-Factory predictions are matched by order)", path=path)
        return {rec["id"]: {"id": rec["id"], "label": gold_of(rec), "predict": row["predict"]}
                for rec, row in zip(records, rows)}
    known = {r["id"]: r for r in records}
    out: dict[str, dict] = {}
    for row in rows:
        if row["id"] not in known:
            raise FtkError(f"id {row['id']!r} is not in the prepared split {data_path}", path=path,
                           where=str(row["_line"]))
        if row["id"] in out:
            raise FtkError(f"duplicate id {row['id']!r}", path=path, where=str(row["_line"]))
        out[row["id"]] = {"id": row["id"], "label": gold_of(known[row["id"]]), "predict": row["predict"]}
    return out


def read_done(path: Path) -> dict[str, dict]:
    """Rows already written (a torn last line from a crash is ignored and rewritten)."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "id" in row:
                done[row["id"]] = row
    return done


def write_rows(path: Path, rows) -> None:
    """Replace the predictions file atomically with `rows` (drops a torn last line, fixes order)."""
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def base_row(record: dict) -> dict:
    """The fields every prediction row starts with: id, gold, and the source's own id if any."""
    row = {"id": record["id"], "label": gold_of(record)}
    if "source_id" in record:
        row["source_id"] = record["source_id"]
    return row


class PredictionsFile:
    """One evaluation's predictions: appended per batch (flushed, fsync'd), resumed by id after a
    crash (a torn last line is dropped), rewritten in the data's order when complete."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.done = read_done(self.path)
        self._fh = None

    def todo(self, records: list[dict]) -> list[dict]:
        return [r for r in records if r["id"] not in self.done]

    def __enter__(self) -> PredictionsFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.done:
            write_rows(self.path, self.done.values())
        self._fh = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            self.done[row["id"]] = row
            self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def finish(self, records: list[dict]) -> dict[str, dict]:
        write_rows(self.path, [self.done[r["id"]] for r in records])
        return self.done
