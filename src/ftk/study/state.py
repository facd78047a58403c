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


def load_states(sdir: Path) -> list[dict]:
    """Every finished trial, the base row first."""
    states = []
    for p in sorted((Path(sdir) / STATE_DIR).glob("*.json")):
        try:
            states.append(json.loads(p.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise FtkError(f"not valid JSON ({exc})", path=p) from None
    if not states:
        raise FtkError("no finished trials here (run `ftk study run STUDY.yaml` first)", path=sdir)
    return sorted(states, key=lambda s: (not s.get("base"), s["id"]))
