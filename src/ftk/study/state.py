"""The study folder's record of finished trials: trials/<id>.json, written when a trial's run and
evaluation are done (so a re-run skips it), read by the report."""

from __future__ import annotations

from pathlib import Path

from ftk.errors import FtkError
from ftk.fileio import read_json

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


REQUIRED = {"id": str, "run_dir": str, "eval_dir": str, "varied": dict}  # what the report reads


def read_state(path: Path) -> dict:
    """One trial's state file, checked key by key (a damaged or hand-edited file is one line)."""
    state = read_json(path, what="trial state", required=tuple(REQUIRED))
    for key, kind in REQUIRED.items():
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise FtkError(f"trial state key `{key}` has the wrong type ({type(state[key]).__name__}); damaged or "
                           "edited by hand (remove the file to run the trial again)", path=path, where=key)
    return state


def load_states(sdir: Path) -> list[dict]:
    """Every finished trial, the base row first, its folders as paths that work from here."""
    states = []
    for p in sorted((Path(sdir) / STATE_DIR).glob("*.json")):
        states.append(_resolved(sdir, read_state(p)))
    if not states:
        raise FtkError("no finished trials here (run `ftk study run STUDY.yaml` first)", path=sdir)
    return sorted(states, key=lambda s: (not s.get("base"), s["id"]))
