"""`kill -9` of `ftk prepare` at every stage of its work leaves no partial output, and the next run
cleans up and writes the very bytes an uninterrupted run writes."""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

FTK = Path(sys.executable).parent / "ftk"


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_prepare(synth_dir, out: Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("FTK_KILL_AT", None)
    if kill_at:
        env["FTK_KILL_AT"] = kill_at
    return subprocess.run([str(FTK), "prepare", "--task", "agnews", "--train", str(synth_dir / "train.csv"),
                           "--test", str(synth_dir / "test.csv"), "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth_dir):
    out = tmp_path_factory.mktemp("ref") / "prepared"
    assert run_prepare(synth_dir, out).returncode == 0
    return digest(out)


@pytest.mark.parametrize("point, older", [
    ("prepare:read", False),          # everything read and checked, nothing written yet
    ("prepare:write:train", False),   # halfway through the train file
    ("prepare:write:test", False),    # train written, halfway through test
    ("prepare:write:train", True),    # re-preparing over an older output
    ("prepare:swap", True),           # the older output moved aside, the new one not yet in place
])
def test_kill_9_leaves_no_partial_output_and_the_rerun_is_identical(tmp_path, synth_dir, reference, point, older):
    out = tmp_path / "prepared"
    old = None
    if older:  # an older, different output (other seed and sample) is in place
        assert run_prepare(synth_dir, out, "--seed", "7", "--max-samples", "train=300").returncode == 0
        old = digest(out)
    proc = run_prepare(synth_dir, out, kill_at=point)
    assert proc.returncode == -9, proc.stderr  # really killed, at that point
    if out.exists():
        assert digest(out) == old, "the output folder was changed in place"  # the old one, whole
    else:
        assert old is None or point == "prepare:swap"
    assert not any(tmp_path.glob("prepared/*.tmp"))

    proc = run_prepare(synth_dir, out)
    assert proc.returncode == 0, proc.stderr
    assert digest(out) == reference  # byte-identical to an uninterrupted run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # staging leftovers removed


def test_two_prepares_into_one_folder_at_once_both_succeed(tmp_path, synth_dir, reference):
    """The first pauses halfway through writing (its staging folder in place); the second, started then,
    waits for it instead of removing that folder as a killed one's leftover; both finish, and the folder
    holds the bytes of an uninterrupted run."""
    out = tmp_path / "prepared"
    env = dict(os.environ, FTK_PAUSE_AT="prepare:write:train:3")
    env.pop("FTK_KILL_AT", None)
    first = subprocess.Popen([str(FTK), "prepare", "--task", "agnews", "--train", str(synth_dir / "train.csv"),
                              "--test", str(synth_dir / "test.csv"), "--out", str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None and not list(tmp_path.glob(".prepared.staging-*")):
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()
    second = run_prepare(synth_dir, out)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert "waiting: another ftk process is writing" in second.stderr
    assert digest(out) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # no lock file, no staging left
