"""The GPU kit (scripts/gpu_kit): its wheelhouse builds under the device's 60 MiB and holds what the
device lacks; its driver prints every row and says "skipped: no CUDA" for GPU steps on a CPU. The
whole CPU rehearsal (a fresh venv, the wheelhouse installed with --no-index, every step at tiny sizes)
is `scripts/gpu_kit/run.sh --cpu-rehearsal`, run by hand: it installs torch into a new venv."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "scripts" / "gpu_kit"


@pytest.mark.slow  # downloads ~40 MB of wheels from the package registry
def test_wheelhouse_builds_under_60_mib_with_what_the_device_lacks(tmp_path):
    dest = tmp_path / "whl"
    proc = subprocess.run(["bash", str(KIT / "build.sh"), "--dest", str(dest)], capture_output=True, text=True,
                          timeout=600, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = sorted(dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    assert size < 60 * 2**20, f"{size / 2**20:.1f} MiB"
    assert f"{size / 2**20:.1f} MiB" in proc.stdout
    names = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
    # ftk itself, the training stack the device lacks, DeepSpeed built here without ops
    assert {"ftk", "llamafactory", "transformers", "datasets", "trl", "peft", "deepspeed", "pydantic"} <= names
    assert not names & {"torch", "numpy", "pyarrow", "pandas", "scipy"}, "the device image has these"
    # the device runs CPython 3.12: every compiled wheel is for it
    for w in wheels:
        tag = w.name[:-4].split("-")[-3]
        assert tag in ("py3", "py2.py3", "cp312", "cp39", "py312") or tag.startswith("py3"), w.name
    ds = next(w for w in wheels if w.name.startswith("deepspeed-"))
    with zipfile.ZipFile(ds) as z:
        assert not [n for n in z.namelist() if n.endswith(".so")], "DeepSpeed must be built without ops"
    # no staging folder left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["whl"]

    # over its limit: exit 1, says so, nothing written (the earlier wheelhouse stays as it was)
    before = sorted(p.name for p in dest.iterdir())
    over = subprocess.run(["bash", str(KIT / "build.sh"), "--dest", str(dest)], capture_output=True, text=True,
                          timeout=600, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "FTK_KIT_LIMIT_MIB": "1"})
    assert over.returncode == 1
    assert "over the 1 MiB limit" in over.stderr and "nothing written" in over.stderr
    assert sorted(p.name for p in dest.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["whl"]


def test_run_sh_without_a_wheelhouse_says_so(tmp_path):
    proc = subprocess.run(["bash", str(KIT / "run.sh"), "--wheels", str(tmp_path / "none")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "no wheels in" in proc.stderr and "build.sh" in proc.stderr
    bad = subprocess.run(["bash", str(KIT / "run.sh"), "--bogus"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown argument '--bogus'" in bad.stderr


def test_kit_on_a_cpu_without_rehearsal_prints_every_row_and_skips_gpu_steps(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(KIT / "kit.py"), "--out", str(out), "--work", str(work)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    rows = json.loads((out / "kit.json").read_text())["rows"]
    assert [r["step"] for r in rows] == ["env", "model", "s2_head", "s0_sft", "s0_zero3", "eval", "packing"]
    assert rows[0]["status"] == "ok" and rows[0]["figures"]["python"]
    for r in rows[1:]:
        assert r["status"] == "skipped: no CUDA"
        assert f"{r['step']:10} skipped: no CUDA" in summary
    assert summary in proc.stdout


@pytest.mark.parametrize("script", ["build.sh --dest", "kit.py --work"])
@pytest.mark.parametrize("what", ["folder", "file"])
def test_the_kit_never_removes_what_it_did_not_make(tmp_path, script, what):
    """build.sh --dest PATH removed an existing folder or file at PATH after building (issue 32); so did
    kit.py --work. A path the kit did not make (no marker of its own, not empty) is refused up front,
    exit 2, one line, nothing removed."""
    target = tmp_path / "mine"
    if what == "folder":
        target.mkdir()
        (target / "thesis.tex").write_text("years of work\n")
    else:
        target.write_text("years of work\n")
    name, flag = script.split()
    argv = ["bash", str(KIT / name)] if name.endswith(".sh") else [sys.executable, str(KIT / name)]
    proc = subprocess.run([*argv, flag, str(target), *(["--out", str(tmp_path / "out")] if name == "kit.py" else [])],
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert str(target) in proc.stderr and "nothing removed" in proc.stderr, proc.stderr
    if what == "folder":
        assert (target / "thesis.tex").read_text() == "years of work\n"
    else:
        assert target.read_text() == "years of work\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"], "nothing made beside it either"
