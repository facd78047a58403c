"""The study folder's record of finished trials: trials/<id>.json, written when a trial's run and
evaluation are done (so a re-run skips it), read by the report."""

from __future__ import annotations

import json
from pathlib import Path

from ftk.errors import FtkError

STATE_DIR = "trials"


def state_path(sdir: Path, tid: str) -> Path:
    return Path(sdir) / STATE_DIR / f"{tid}.json"


def is_done(sdir: Path, tid: str) -> bool:
    return state_path(sdir, tid).is_file()


PATH_KEYS = ("run_dir", "eval_dir")


def portable(sdir: Path, path: str | Path) -> str:
    """A trial's folder as stored in its state file: relative to the study folder when inside it, so
    the study reports from any working directory, and after the folder is moved or copied."""
    try:
        return str(Path(path).resolve().relative_to(Path(sdir).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _resolved(sdir: Path, state: dict) -> dict:
    out = dict(state)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str) and not Path(out[key]).is_absolute():
            inside = Path(sdir) / out[key]
            # State files of earlier ftk versions hold paths relative to the directory the study ran in.
            out[key] = str(inside if inside.exists() or not Path(out[key]).exists() else Path(out[key]))
    return out


def load_states(sdir: Path) -> list[dict]:
    """Every finished trial, the base row first, its folders as paths that work from here."""
    states = []
    for p in sorted((Path(sdir) / STATE_DIR).glob("*.json")):
        try:
            states.append(_resolved(sdir, json.loads(p.read_text(encoding="utf-8"))))
        except ValueError as exc:
            raise FtkError(f"not valid JSON ({exc})", path=p) from None
    if not states:
        raise FtkError("no finished trials here (run `ftk study run STUDY.yaml` first)", path=sdir)
    return sorted(states, key=lambda s: (not s.get("base"), s["id"]))
