"""What made an evaluation folder's predictions, so they are reused only by an evaluation that would
make the very same rows.

`ftk eval` resumes: rows already in `predictions.jsonl` are kept and only the missing ones are
predicted. That is right only when the same model (weights' sha256, not a path), checkpoint, mode,
engine, prompt settings and data split made them. `identity.json` records those beside the rows;
an evaluation that differs in any of them is refused in one line naming what differs (exit 2), and
`--fresh` starts the folder anew (removing only ftk's own output files). A folder with predictions
but no identity (an older ftk, or a hand-made file) is refused the same way.

>>> differences({"mode": "generate", "split": "test"}, {"mode": "choice", "split": "test"})
['mode: generate -> choice']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftk.errors import FtkError
from ftk.eval.predictions import PREDICTIONS
from ftk.fileio import read_json, write_json

IDENTITY = "identity.json"
VERSION = 1
# The files an evaluation writes into its folder: the only ones `--fresh` removes.
OUTPUT_FILES = (PREDICTIONS, IDENTITY, "metrics.json", "report.md", "scores.jsonl", "errors.jsonl", "items.jsonl",
                "confusion.png")
OUTPUT_GLOBS = ("predictions.shard-*.jsonl", "shard-*.log")
# Files of a model folder that decide its outputs (weights, architecture, tokenizer, template).
_MODEL_FILES = ("config.json", "adapter_config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "ftk_head.json",
                "ftk_method.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
_NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth")


def model_digest(folder: str | Path) -> str | None:
    """sha256 over a model folder's weight, config and tokenizer files (names and contents, sorted);
    None when `folder` is not a local folder (a Hub id: its name stands for it)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in _NOT_WEIGHTS
                   and (p.suffix in _WEIGHT_SUFFIXES or p.name in _MODEL_FILES))
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def text_digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def read_identity(out_dir: Path) -> dict | None:
    """The folder's recorded identity; None when there is none, {"unreadable": True} when it is damaged."""
    path = Path(out_dir) / IDENTITY
    if not path.is_file():
        return None
    try:
        return read_json(path, what="eval identity")
    except FtkError:
        return {"unreadable": True}


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    text = "none" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every key whose value differs (the made_by note is not compared)."""
    keys = sorted((set(old) | set(new)) - {"made_by", "version"})
    return [f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def existing_rows(out_dir: Path) -> int:
    """Prediction rows already in the folder (the merged file and any shard files)."""
    n = 0
    for path in [Path(out_dir) / PREDICTIONS, *sorted(Path(out_dir).glob("predictions.shard-*.jsonl"))]:
        if path.is_file():
            with open(path, encoding="utf-8", errors="replace") as fh:
                n += sum(1 for line in fh if line.strip())
    return n


def clear_outputs(out_dir: Path) -> int:
    """Remove ftk's own output files from an evaluation folder (nothing else); how many went."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return 0
    gone = 0
    paths = [out_dir / n for n in OUTPUT_FILES] + [p for g in OUTPUT_GLOBS for p in out_dir.glob(g)]
    for p in paths:
        if p.is_file() or p.is_symlink():
            p.unlink()
            gone += 1
    return gone


def claim(out_dir: Path, identity: dict, *, fresh: bool = False) -> None:
    """Make `out_dir` this evaluation's folder: check that rows already there were made by the same
    `identity` (else FtkError naming what differs), then record it. With `fresh`, ftk's earlier
    outputs in the folder are removed first."""
    out_dir = Path(out_dir)
    if fresh:
        gone = clear_outputs(out_dir)
        if gone:
            print(f"[ftk] --fresh: removed {gone} earlier output file(s) from {out_dir}", flush=True)
    rows = existing_rows(out_dir)
    prior = read_identity(out_dir)
    if rows:
        hint = "evaluate into another folder with --out, or pass --fresh to start this one anew"
        if prior is None or prior.get("unreadable"):
            what = "no" if prior is None else f"an unreadable {IDENTITY} as"
            raise FtkError(f"holds {rows} predictions with {what} record of the model, mode and data that made "
                           f"them, so they cannot be reused as this evaluation's; {hint}", path=out_dir)
        diff = differences(prior, identity)
        if diff:
            made = f" (made by {prior['made_by']})" if prior.get("made_by") else ""
            raise FtkError(f"holds {rows} predictions{made} from a different evaluation ({'; '.join(diff)}); "
                           f"reusing them would report another model's or setting's answers as these; {hint}",
                           path=out_dir)
    write_json(out_dir / IDENTITY, {**identity, "version": VERSION})


@contextlib.contextmanager
def claimed(out_dir: Path, identity: dict, *, fresh: bool = False) -> Iterator[None]:
    """`claim` the folder for the block; when the block fails before a single prediction reached a folder
    this call made, the folder goes again (a failed model load leaves nothing behind)."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    claim(out_dir, identity, fresh=fresh)
    try:
        yield
    except BaseException:
        if created and not existing_rows(out_dir):
            clear_outputs(out_dir)
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def write_identity_of_file(out_dir: Path, predictions: str | Path) -> None:
    """The identity of a folder scored from a predictions file (`ftk eval --predictions`): it names
    that file and its sha256, so no model's evaluation ever matches it and reuses its rows."""
    from ftk.fileio import sha256_file

    write_json(Path(out_dir) / IDENTITY, {"made_by": f"--predictions {predictions}",
                                          "predictions_sha256": sha256_file(predictions), "version": VERSION})
