"""The test harness's forked launches (forklaunch.py) train exactly what a plain subprocess trains."""

import hashlib
import json

import pytest

import forklaunch
from conftest import ftk_here, tiny_recipe

pytestmark = pytest.mark.slow


def _weights(run_dir):
    return hashlib.sha256((run_dir / "model" / "model.safetensors").read_bytes()).hexdigest()


def test_a_forked_training_equals_a_plain_subprocess(tmp_path, synth_dir, tiny_model, monkeypatch):
    got = {}
    for how in ("fork", "subprocess"):
        monkeypatch.setenv("FTK_TEST_FORKLAUNCH", "1" if how == "fork" else "0")
        (tmp_path / how).mkdir()
        recipe = tiny_recipe(tmp_path / how, synth_dir, tiny_model, "train: {max_steps: 4, logging_steps: 1}\n")
        proc = ftk_here("train", recipe, cwd=tmp_path / how)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (run,) = (tmp_path / how / "runs").iterdir()
        losses = [r["loss"] for r in map(json.loads, (run / "model" / "trainer_log.jsonl").open()) if "loss" in r]
        trainer_lines = (run / "train.log").read_text().count("trainable params")  # its output reached the log
        got[how] = (_weights(run), losses, trainer_lines)
    assert got["fork"] == got["subprocess"] and len(got["fork"][1]) == 4 and got["fork"][2] > 0


def test_what_is_forked_and_what_stays_a_subprocess():
    assert forklaunch._target(["/venv/bin/python", "-m", "llamafactory.launcher", "c.yaml"]) == \
        ("module", "llamafactory.launcher", ["c.yaml"])
    assert forklaunch._target(["llamafactory-cli", "export", "e.yaml"])[0] == "function"
    assert forklaunch._target(["torchrun", "--nproc-per-node", "2", "-m", "x"]) is None
