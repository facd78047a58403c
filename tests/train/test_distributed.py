"""Real multi-process training on CPU through `ftk train`: DDP (gloo), DeepSpeed ZeRO-3, and
kill -> --resume from the last checkpoint. Slow (tens of seconds each)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PORT_GROUP, REPO, ftk_here, train_past_teardown_abort

pytestmark = pytest.mark.slow


def _recipe(tmp_path, synth_dir, tiny_model, name, extra=""):
    r = tmp_path / f"{name}.yaml"
    r.write_text(f"extends: {REPO / 'configs' / 'agnews_tiny_cpu.yaml'}\nname: {name}\n"
                 f"data: {{train: {synth_dir / 'train.csv'}, test: {synth_dir / 'test.csv'},"
                 f" prepared_dir: {tmp_path / 'prepared'}}}\n"
                 f"model: {{name_or_path: {tiny_model}}}\nruns_dir: {tmp_path / 'runs'}\n" + extra)
    return r


def _only_run(tmp_path, name):
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(name + "-")]
    return run_dir


@pytest.mark.xdist_group(PORT_GROUP)
def test_ddp_two_processes_gloo(tmp_path, synth_dir, tiny_model):
    r = _recipe(tmp_path, synth_dir, tiny_model, "ddp", "distributed: {nproc_per_node: 2}\ntrain: {max_steps: 8}\n")
    proc = train_past_teardown_abort(r, runs=tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    run_dir = _only_run(tmp_path, "ddp")
    log = (run_dir / "train.log").read_text()  # the trainer's own output goes to the log, not the terminal
    assert "world size: 2, device: cpu" in log and "distributed training: True" in log
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["argv"][0] == "torchrun" and m["argv"][m["argv"].index("--nproc-per-node") + 1] == "2"
    state = json.loads((run_dir / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 8


@pytest.mark.xdist_group(PORT_GROUP)
def test_deepspeed_zero3_on_cpu_then_eval(tmp_path, synth_dir, tiny_model):
    r = _recipe(tmp_path, synth_dir, tiny_model, "z3",
                "distributed: {nproc_per_node: 2, deepspeed: z3}\ntrain: {max_steps: 6}\neval: {limit: 16}\n")
    proc = train_past_teardown_abort(r, runs=tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    run_dir = _only_run(tmp_path, "z3")
    assert "Creating torch.float32 ZeRO stage 3 optimizer" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "deepspeed.json").read_text())["zero_optimization"]["stage"] == 3
    assert (run_dir / "model" / "model.safetensors").is_file()  # ZeRO-3 gathered full weights
    proc = ftk_here("eval", run_dir, cwd=tmp_path)  # a ZeRO-3-trained model evaluates like any other
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run_dir / "eval-test" / "metrics.json").read_text())["n"] == 16


def test_kill_after_first_checkpoint_then_resume(tmp_path, synth_dir, tiny_model):
    r = _recipe(tmp_path, synth_dir, tiny_model, "res", "train: {max_steps: 40, save_steps: 10, logging_steps: 5}\n")
    exe = Path(sys.executable).parent / "ftk"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([str(exe), "train", str(r)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 300
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs").glob("res-*/model/checkpoint-10/trainer_state.json"))
        if found:
            ckpt = found[0].parent
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job, trainer included, as a crash would
    proc.wait()
    assert ckpt is not None, (tmp_path / "first.log").read_text()[-3000:]
    run_dir = ckpt.parent.parent
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"  # as the crash left it
    listing = ftk_here("runs", tmp_path / "runs", cwd=tmp_path)  # ... but its process is gone
    assert listing.returncode == 0 and "interrupted" in listing.stdout, listing.stdout
    assert not (run_dir / "model" / "checkpoint-40").exists()

    proc = ftk_here("train", "--resume", run_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    last = max(int(p.name.split("-")[1]) for p in (run_dir / "model").glob("checkpoint-*"))
    import re

    resumed_at = re.search(r"resuming \S+ from \S+checkpoint-(\d+)", proc.stdout)
    assert resumed_at and int(resumed_at.group(1)) >= 10
    # The trainer itself restored that step instead of starting over.
    log = (run_dir / "train.log").read_text()
    assert f"Resuming training from checkpoint with epoch 0 and global step {resumed_at.group(1)}" in log
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "finished" and m["resumes"][0]["from"].startswith(str(run_dir / "model" / "checkpoint-"))
    assert m["llamafactory_args"].get("resume_from_checkpoint") or m["stages"][0]["llamafactory_args"]["resume_from_checkpoint"]
    state = json.loads((run_dir / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 40 and last == 40
