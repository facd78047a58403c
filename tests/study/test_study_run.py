"""A tiny twin study end to end (synthetic AG News, three learning rates plus the base model): the
table with CIs and p-values, kill -9 and resume to the same table, base vs fine-tuned with its test,
a checkpoint curve whose last row is the run's own eval, and the t-SNE plots."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, ftk_here, popen_ftk, stop_group, wait_for_file

pytestmark = pytest.mark.slow
FTK = Path(sys.executable).parent / "ftk"


@pytest.fixture(scope="module")
def study_file(tmp_path_factory, synth_dir, tiny_model):
    tmp = tmp_path_factory.mktemp("study")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "extends": str(REPO / "configs" / "agnews_tiny_cpu.yaml"), "name": "lr",
        "data": {"train": str(synth_dir / "train.csv"), "test": str(synth_dir / "test.csv"),
                 "prepared_dir": str(tmp / "prepared")},
        "model": {"name_or_path": str(tiny_model)},
        "train": {"max_steps": 20, "save_steps": 5, "logging_steps": 5},
        "eval": {"limit": 100}}))
    study = tmp / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "lr_tiny", "recipe": str(recipe), "base": True,
                                     "grid": {"train.learning_rate": [1.0e-3, 5.0e-4, 2.0e-4]}}))
    return study


@pytest.fixture(scope="module")
def finished(study_file):
    out = study_file.parent / "uninterrupted"
    proc = ftk_here("study", "run", study_file, "--out", out, cwd=study_file.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def _state(out: Path, prefix: str) -> dict:
    """A finished trial's state, its folders resolved as the report resolves them."""
    from ftk.study.state import load_states

    return next(st for st in load_states(out) if st["id"].startswith(prefix))


def _values(report):
    return [(r["trial"], r["value"], r["ci95"], r["invalid_rate"]) for r in report["rows"]]


def test_table_has_four_rows_cis_pvalues_and_a_plot(finished):
    out, proc = finished
    rep = json.loads((out / "report.json").read_text())
    rows = rep["rows"]
    assert [r["trial"] for r in rows][0] == "base" and len(rows) == 4
    assert all(r["ci95"][0] <= r["value"] <= r["ci95"][1] for r in rows)
    trials = [r for r in rows if not r["base"]]
    assert sum(r["vs_best"] is not None for r in trials) == 2  # every trial but the best
    for r in trials:
        assert 0 <= r["vs_base"]["mcnemar_p_holm"] <= 1 and 0 <= r["vs_base"]["bootstrap_p_holm"] <= 1
        assert r["vs_base"]["mcnemar_p_holm"] >= r["vs_base"]["mcnemar_p"]  # Holm never lowers a p-value
        assert r["train_seconds"] > 0
    assert (out / "axis-train.learning_rate.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "| base |" in md and "(best)" in md and "McNemar p=" in md
    assert "train.learning_rate=0.001" in (out / "report.csv").read_text() or "0.001" in (out / "report.csv").read_text()
    assert "report:" in proc.stdout


def test_base_model_is_near_chance_with_invalid_counted(finished):
    out, _ = finished
    base = _state(out, "base")
    m = json.loads(Path(base["eval_dir"], "metrics.json").read_text())
    assert m["base"] is True and m["n"] == 100  # every row, invalid ones included
    scores = [json.loads(line) for line in Path(base["eval_dir"], "scores.jsonl").open()]
    assert len(scores) == 100 and m["accuracy"] == sum(s["correct"] for s in scores) / 100
    assert m["accuracy"] < 0.45 and m["invalid"] == sum(s["invalid"] for s in scores)
    trial = _state(out, "t00-")
    proc = ftk_here("compare", base["eval_dir"], trial["eval_dir"])
    assert proc.returncode == 0 and "McNemar" in proc.stdout and "Paired bootstrap" in proc.stdout


def test_killed_study_resumes_with_only_the_missing_trials_and_the_same_table(study_file, finished, tmp_path):
    """A copy of the finished study loses its last trial (state file and run folder); a re-run is killed
    (kill -9) in the middle of it, once its trainer has saved a checkpoint; the next run trains only
    that trial and gives the uninterrupted table."""
    ref_out, _ = finished
    out = tmp_path / "interrupted"
    shutil.copytree(ref_out, out)
    lost = sorted(p.stem for p in (out / "trials").glob("t*.json"))[-1:]
    for tid in lost:
        (out / "trials" / f"{tid}.json").unlink()
        for run in (out / "runs").glob(f"lr_tiny-{tid}-*"):
            shutil.rmtree(run)
    (out / "report.json").unlink()
    runs_before = {p.name for p in (out / "runs").iterdir()}
    proc = subprocess.Popen([str(FTK), "study", "run", str(study_file), "--out", str(out)], cwd=study_file.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and \
            not list(out.glob(f"runs/lr_tiny-{lost[0]}-*/model/checkpoint-*/trainer_state.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-trial: its run folder is half written
    proc.wait()
    assert list(out.glob(f"runs/lr_tiny-{lost[0]}-*")), "the killed trial had not started"
    assert not (out / "trials" / f"{lost[0]}.json").exists() and not (out / "report.json").exists()
    killed = {p.name for p in (out / "runs").iterdir()} - runs_before
    rerun = ftk_here("study", "run", study_file, "--out", out, cwd=study_file.parent)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "3 of 4 trial(s) already done" in rerun.stdout
    new_runs = {p.name for p in (out / "runs").iterdir()} - runs_before - killed
    assert sorted(n.split("-")[1] for n in new_runs) == sorted(t.split("-")[0] for t in lost), new_runs
    ref = json.loads((ref_out / "report.json").read_text())
    got = json.loads((out / "report.json").read_text())
    assert _values(got) == _values(ref)  # same seeds, same metrics on CPU


def test_checkpoint_curve_last_row_equals_the_runs_eval(finished):
    out, _ = finished
    trial = _state(out, "t00-")
    run = Path(trial["run_dir"])
    proc = ftk_here("eval", run, "--checkpoints", "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = json.loads((run / "curve-test" / "curve.json").read_text())
    assert [r["step"] for r in curve["rows"]] == [5, 10, 15, 20]
    final = json.loads(Path(trial["eval_dir"], "metrics.json").read_text())
    assert curve["rows"][-1]["accuracy"] == final["accuracy"]
    assert curve["rows"][-1]["train_loss"] is not None
    assert (run / "curve-test" / "curve.png").stat().st_size > 10_000
    assert (run / "eval-test-ckpt10" / "metrics.json").is_file()
    proc = ftk_here("compare", run, run)  # several evaluations now: the run's own eval-test is taken, and said
    assert proc.returncode == 0 and "comparing eval-test" in proc.stderr, proc.stderr


def test_tsne_plots(finished):
    out, _ = finished
    trial = _state(out, "t00-")
    proc = ftk_here("embed", trial["run_dir"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    emb = Path(trial["run_dir"]) / "embed-test"
    assert (emb / "tsne_by_label.png").stat().st_size > 10_000 and (emb / "tsne_by_correct.png").is_file()
    rows = (emb / "points.csv").read_text().splitlines()[1:]
    assert len(rows) == 100 and all(r.rsplit(",", 1)[1] in ("0", "1") for r in rows)  # the rows eval scored
    proc = ftk_here("embed", trial["run_dir"], "--limit", "150")  # past the evaluated rows: "not evaluated"
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (emb / "points.csv").read_text().splitlines()[1:]
    assert len(rows) == 150 and sum(r.endswith(",") for r in rows) == 50


def test_a_moved_study_folder_reports_from_any_directory(finished, tmp_path):
    """Trial files keep their folders relative to the study folder: moved elsewhere and reported from
    an unrelated working directory, the table is the same."""
    out, _ = finished
    moved = tmp_path / "elsewhere" / "study"
    moved.parent.mkdir()
    ref = _values(json.loads((out / "report.json").read_text()))
    out.rename(moved)
    try:
        proc = ftk_here("study", "report", moved, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert _values(json.loads((moved / "report.json").read_text())) == ref
        assert json.loads((moved / "trials" / "base.json").read_text())["run_dir"].startswith("runs/")
    finally:
        moved.rename(out)


@pytest.mark.parametrize("change, says", [
    ({"eval": {"limit": 50}}, "study.eval.limit: none -> 50"),
    ({"overrides": ["train.max_steps=10"]}, "train.max_steps: 20 -> 10"),
])
def test_a_study_changed_since_its_trials_ran_is_refused_not_reused(finished, study_file, tmp_path, change, says):
    """Trials recorded as done were reused whatever the study file, recipe or evaluation said now
    (issue 32): a changed study reported the old trials' results as its own. Now every done trial's
    recorded settings must equal the study's; else one line naming what differs, before anything in
    the folder is touched."""
    ref_out, _ = finished
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**yaml.safe_load(study_file.read_text()), **change}))
    proc = ftk_here("study", "run", changed, "--out", out, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is recorded as done with other settings" in lines[0] and says in lines[0], lines
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_a_checkpoint_evaluation_does_not_take_the_final_models_answers(finished):
    out, _ = finished
    trial = _state(out, "t00-")
    proc = ftk_here("eval", trial["run_dir"], "--checkpoint", "10", "--out", trial["eval_dir"])
    assert proc.returncode == 2 and "checkpoint: none -> 10" in proc.stderr, proc.stderr[-2000:]


def test_a_failing_trial_is_one_line_and_the_finished_ones_are_kept(study_file, tmp_path):
    """A trial whose training fails ended the study in a traceback (issue 32): now one line naming the
    trial, the trainer's exit code, and the finished trials stay done."""
    broken = tmp_path / "broken-model"
    recipe = yaml.safe_load((study_file.parent / "recipe.yaml").read_text())
    shutil.copytree(recipe["model"]["name_or_path"], broken)
    (broken / "model.safetensors").write_bytes(b"these are not weights\n" * 100)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "broken", "recipe": str(study_file.parent / "recipe.yaml"),
                                     "base": False, "overrides": [f"model.name_or_path={broken}"],
                                     "grid": {"train.learning_rate": [1.0e-3]}}))
    proc = ftk_here("study", "run", study, "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: study broken: trial t00-") and "training failed with exit code 1" in last, last
    assert "run the study again to resume" in last


def test_ctrl_c_during_a_study_exits_130_in_one_line(study_file, tmp_path):
    """Ctrl-C during `ftk study run` exited 1 with a traceback (issue 32)."""
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "long", "recipe": str(study_file.parent / "recipe.yaml"), "base": False,
                                     "overrides": ["train.max_steps=100000"],
                                     "grid": {"train.learning_rate": [1.0e-3]}}))
    out = tmp_path / "out"
    proc = popen_ftk("study", "run", study, "--out", out, cwd=tmp_path)
    try:
        wait_for_file(proc, out, "runs/*/model/trainer_log.jsonl")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
        _, err = proc.communicate(timeout=120)
    finally:
        stop_group(proc)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err.strip().splitlines()[-1], err[-2000:]
    assert not list((out / "trials").glob("*.json")), "an interrupted trial is not recorded as done"
