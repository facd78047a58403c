"""LLaMA-Factory's dataset registry: the `dataset_info.json` that `ftk prepare` writes beside
its data files (the one data-format fact the data stage needs to know about LLaMA-Factory)."""

from __future__ import annotations

import json
from pathlib import Path

from ftk.errors import FtkError
from ftk.fileio import write_json

DATASET_INFO = "dataset_info.json"
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}


def dataset_info_entry(file_name: str, *, pretrain: bool = False) -> dict:
    """A dataset_info.json entry: alpaca columns, or the `text` column for stage pt."""
    if pretrain:
        return {"file_name": file_name, "columns": {"prompt": "text"}}
    return {"file_name": file_name, "formatting": "alpaca", "columns": dict(ALPACA_COLUMNS)}


def read_dataset_info(dataset_dir: str | Path) -> dict:
    """The registry in dataset_dir ({} when there is none); a corrupt file is a user error."""
    path = Path(dataset_dir) / DATASET_INFO
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = str(getattr(exc, "lineno", "")) or None
        raise FtkError(f"not valid JSON: {getattr(exc, 'msg', exc)}", path=path, where=where) from None
    if not isinstance(info, dict):
        raise FtkError("expected a JSON object of dataset entries", path=path)
    return info


def update_dataset_info(dataset_dir: str | Path, entries: dict[str, dict]) -> None:
    """Merge `entries` into dataset_dir/dataset_info.json, keeping every other dataset's entry."""
    info = read_dataset_info(dataset_dir)
    info.update(entries)
    write_json(Path(dataset_dir) / DATASET_INFO, info)
