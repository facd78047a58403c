"""Real LLaMA-Factory training + ftk eval on the tiny model, through the `ftk` command (minutes)."""

import json

import pytest

from conftest import REPO, run_ftk

pytestmark = pytest.mark.slow


def test_train_then_eval_end_to_end(tmp_path, synth_dir, tiny_model):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"extends: {REPO / 'configs' / 'agnews_tiny_cpu.yaml'}\n"
        "name: e2e\n"
        f"data: {{train: {synth_dir / 'train.csv'}, test: {synth_dir / 'test.csv'},"
        f" prepared_dir: {tmp_path / 'prepared'}}}\n"
        f"model: {{name_or_path: {tiny_model}}}\n"
        f"runs_dir: {tmp_path / 'runs'}\n")
    proc = run_ftk("train", recipe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["exit_code"] == 0
    assert manifest["argv"][:3] == ["python", "-m", "llamafactory.launcher"]
    assert manifest["data"]["splits"]["train"]["rows"] == 2000
    assert (run_dir / "llamafactory.yaml").is_file() and (run_dir / "train.log").stat().st_size > 0
    assert (run_dir / "model" / "model.safetensors").is_file()
    log = [json.loads(l) for l in (run_dir / "model" / "trainer_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]

    proc = run_ftk("eval", run_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir / "eval-test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 200
    assert metrics["accuracy"] >= 0.9, metrics["accuracy"]
    for key in ("macro_f1", "micro_f1", "weighted_f1", "mcc", "invalid_rate", "per_class", "confusion"):
        assert key in metrics
    assert metrics["confusion"]["columns"][-1] == "[invalid]"
    for name in ("report.md", "confusion.png", "errors.jsonl", "predictions.jsonl"):
        assert (out / name).stat().st_size > 0 or name == "errors.jsonl"
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 200 and len({p["id"] for p in preds}) == 200

    # A second eval resumes: nothing left to generate, same metrics, no duplicate rows.
    proc = run_ftk("eval", run_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((out / "metrics.json").read_text())
    assert again["accuracy"] == metrics["accuracy"]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 200
