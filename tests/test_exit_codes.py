"""Every failure exits non-zero through the installed `ftk` console script, as a scheduler, a Makefile
or CI sees it: a user error 2, a failed trainer or export its own code, Ctrl-C 130 (issue 22).

These run the real script (not `ftk_here`): the exit code is the process's own."""

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from conftest import REPO, popen_ftk, run_ftk, stop_group, wait_for_file

pytestmark = pytest.mark.slow
FTK = Path(sys.executable).parent / "ftk"


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory, demo_run) -> Path:
    """A copy of the demo run whose weights are not a safetensors file any more."""
    _, run_dir, _ = demo_run
    copy = tmp_path_factory.mktemp("broken") / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval-*", "export-*"))
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace(str(run_dir), str(copy)))
    (copy / "model" / "model.safetensors").write_bytes(b"these are not weights\n" * 100)
    return copy


def _recipe(tmp: Path, demo_run, model: Path, name: str) -> Path:
    demo_tmp, _, _ = demo_run
    r = tmp / f"{name}.yaml"
    r.write_text(f"extends: {demo_tmp / 'recipe.yaml'}\nname: {name}\nmodel: {{name_or_path: {model}}}\n"
                 f"runs_dir: {tmp / 'runs'}\n")
    return r


def test_bad_recipe_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {REPO / 'configs' / 'agnews_tiny_cpu.yaml'}\ntrain: {{learning_rate: -1}}\n")
    proc = run_ftk("train", bad, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "learning_rate" in proc.stderr


def test_failed_training_exits_with_the_trainers_code(tmp_path, demo_run, broken_run):
    proc = run_ftk("train", _recipe(tmp_path, demo_run, broken_run / "model", "fails"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "training failed with exit code 1" in proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"


def test_failed_eval_exits_nonzero_and_writes_no_metrics(broken_run):
    proc = run_ftk("eval", broken_run)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert not (broken_run / "eval-test" / "metrics.json").exists()


def test_failed_export_exits_with_the_exporters_code(broken_run):
    proc = run_ftk("export", broken_run)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "export failed with exit code 1" in proc.stderr


def test_ctrl_c_during_training_exits_130(tmp_path, demo_run, tiny_model):
    recipe = _recipe(tmp_path, demo_run, tiny_model, "interrupted")
    proc = popen_ftk("train", recipe, "train.max_steps=100000", cwd=tmp_path)
    try:
        wait_for_file(proc, tmp_path / "runs", "*/model/trainer_log.jsonl")  # the trainer is stepping
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
        out, err = proc.communicate(timeout=120)
    finally:
        stop_group(proc)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "interrupted" in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (its trainer, the trainer's ranks), from /proc's parent links."""
    parent = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            parent[int(p.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_sigterm_stops_the_trainer_and_exits_143(tmp_path, demo_run, tiny_model):
    """SIGTERM (what supervisors and containers send), to ftk alone: the trainer it started left with
    no parent while `ftk runs` called the run interrupted (issue 32). Now ftk stops its child, waits
    for it, records the run as failed with 143 and exits 143 in one line."""
    recipe = _recipe(tmp_path, demo_run, tiny_model, "terminated")
    proc = popen_ftk("train", recipe, "train.max_steps=100000", cwd=tmp_path)
    try:
        wait_for_file(proc, tmp_path / "runs", "*/model/trainer_log.jsonl")  # the trainer is stepping
        (run_dir,) = (tmp_path / "runs").iterdir()
        children = _descendants(proc.pid)
        assert children, "no trainer found to stop"
        os.kill(proc.pid, signal.SIGTERM)  # ftk only, not its process group
        out, err = proc.communicate(timeout=120)
    finally:
        stop_group(proc)
    assert proc.returncode == 143, out[-2000:] + err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: training terminated"), err
    assert not _alive(children), "the trainer outlived ftk"
    m = json.loads((run_dir / "manifest.json").read_text())
    assert (m["status"], m["exit_code"]) == ("failed", 143)
