"""`ftk baseline`: TF-IDF + logistic regression on a recipe's prepared data, scored by the one scoring
module into an eval folder that `ftk compare` takes."""

import json

from conftest import REPO, ftk_here, run_ftk


def _recipe(tmp_path, synth_dir, extra=""):
    r = tmp_path / "r.yaml"
    r.write_text(f"extends: {REPO / 'configs' / 'agnews_tiny_cpu.yaml'}\n"
                 f"data: {{train: {synth_dir / 'train.csv'}, test: {synth_dir / 'test.csv'},"
                 f" prepared_dir: {tmp_path / 'prepared'}}}\nruns_dir: {tmp_path / 'runs'}\n" + extra)
    return r


def test_baseline_scores_the_eval_split_like_a_model(tmp_path, synth_dir):
    proc = ftk_here("baseline", _recipe(tmp_path, synth_dir))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "runs" / "agnews_tiny_cpu-baseline" / "eval-test"
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "tfidf+logreg" and m["n"] == 200 and m["train_rows"] == 2000 and m["invalid"] == 0
    assert m["accuracy"] >= 0.9  # keyword-separable synthetic classes; chance 0.25
    preds = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert len(preds) == 200 and all(p["engine"] == "tfidf+logreg" for p in preds)
    proc = ftk_here("compare", out, out)
    assert proc.returncode == 0 and "McNemar" in proc.stdout


def test_baseline_needs_a_closed_label_set(tmp_path):
    proc = run_ftk("baseline", REPO / "configs" / "bionlp_gptneo_lora_tiny.yaml", f"runs_dir={tmp_path}",
                   f"data.prepared_dir={tmp_path / 'p'}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "needs a closed label set" in proc.stderr
    assert not (tmp_path / "p").exists()
