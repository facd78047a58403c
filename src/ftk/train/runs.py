"""Run directories: one new folder per run, never reused, with a manifest of what ran."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

from ftk.errors import FtkError
from ftk.fileio import write_json

MANIFEST = "manifest.json"
PACKAGES = ("ftk", "llamafactory", "torch", "transformers", "peft", "trl", "datasets",
            "accelerate", "deepspeed", "tokenizers")
SECRET_RE = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL)", re.I)


def new_run_dir(runs_dir: str | Path, name: str, now: _dt.datetime | None = None) -> Path:
    """Create runs_dir/<name>-<YYYYmmdd-HHMMSS>[-k] exclusively (mkdir fails if it exists)."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = runs_dir / (f"{name}-{stamp}" + (f"-{k}" if k else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FtkError("could not create a new run directory", path=runs_dir)


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    """Host and accelerators, without importing torch (a second of start-up on every run)."""
    info: dict = {"host": socket.gethostname(), "platform": platform.platform(),
                  "python": platform.python_version(), "cpu_count": os.cpu_count(), "gpus": []}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            info["gpus"] = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return info


def safe_env(env: dict[str, str]) -> dict[str, str]:
    """The launch-relevant environment with anything that looks like a secret left out."""
    keep = ("CUDA_VISIBLE_DEVICES", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "MASTER_ADDR",
            "MASTER_PORT", "WANDB_MODE", "WANDB_PROJECT", "HF_HUB_OFFLINE", "FORCE_TORCHRUN")
    return {k: v for k, v in env.items() if k in keep and not SECRET_RE.search(k)}


def write_manifest(run_dir: Path, data: dict) -> None:
    write_json(run_dir / MANIFEST, data)


def read_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise FtkError("not a run directory (no manifest.json)", path=run_dir)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FtkError(f"not valid JSON: {exc.msg}", path=path, where=str(exc.lineno)) from None
