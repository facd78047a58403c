from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def realdata(*parts: str) -> Path:
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


def run_ftk(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed `ftk` console script as a user would."""
    exe = Path(sys.executable).parent / "ftk"
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    from ftk.data.synth import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, n_train=2000, n_test=200, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, synth_dir) -> Path:
    from ftk.data.sources import iter_lines
    from ftk.train.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(out, iter_lines([synth_dir / "train.csv"]))
    return out
