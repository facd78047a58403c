"""`ftk baseline`: TF-IDF + logistic regression (its configuration chosen by cross-validation on the
train split only) and the majority label (all-O for NER) on a recipe's prepared data, scored by the
one scoring module into eval folders that `ftk compare` takes."""

import json

import pytest

from conftest import REPO, ftk_here, run_ftk


def _recipe(tmp_path, synth_dir, extra=""):
    r = tmp_path / "r.yaml"
    r.write_text(f"extends: {REPO / 'configs' / 'agnews_tiny_cpu.yaml'}\n"
                 f"data: {{train: {synth_dir / 'train.csv'}, test: {synth_dir / 'test.csv'},"
                 f" prepared_dir: {tmp_path / 'prepared'}}}\nruns_dir: {tmp_path / 'runs'}\n" + extra)
    return r


def test_baseline_scores_the_eval_split_like_a_model(tmp_path, synth_dir):
    proc = ftk_here("baseline", _recipe(tmp_path, synth_dir), "data.max_samples={train: 400}")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "runs" / "agnews_tiny_cpu-baseline" / "eval-test"
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "tfidf+logreg" and m["n"] == 200 and m["train_rows"] == 400 and m["invalid"] == 0
    assert m["accuracy"] >= 0.9  # keyword-separable synthetic classes; chance 0.25
    assert m["cv"]["folds"] == 5 and m["cv"]["scoring"] == "accuracy" and 0.9 <= m["cv"]["score"] <= 1
    assert m["chosen"]["analyzer"] in ("word", "char_wb") and m["chosen"]["C"] in (0.1, 1.0, 10.0)
    assert "chosen by 5-fold CV on the train split" in proc.stdout
    preds = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert len(preds) == 200 and all(p["engine"] == "tfidf+logreg" for p in preds)
    proc = ftk_here("compare", out, out)
    assert proc.returncode == 0 and "McNemar" in proc.stdout


def test_baseline_needs_a_closed_label_set(tmp_path):
    proc = run_ftk("baseline", REPO / "configs" / "bionlp_gptneo_lora_tiny.yaml", f"runs_dir={tmp_path}",
                   f"data.prepared_dir={tmp_path / 'p'}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "needs a closed label set" in proc.stderr
    assert not (tmp_path / "p").exists()


def test_cross_validation_chooses_on_the_train_split_alone():
    """The choice never sees the test rows: the same train rows give the same choice, whatever the test."""
    from ftk.data.task import load_task
    from ftk.eval.baseline import choose_tfidf

    task = load_task("agnews")
    texts = [f"{w} story number {i}" for i in range(40) for w in ("goal match", "stock market")]
    labels = [lab for _ in range(40) for lab in ("Sports", "Business")]
    clf, chosen, score, scoring, folds = choose_tfidf(texts, labels, task, seed=0)
    assert score == 1.0 and scoring == "accuracy" and folds == 5
    assert list(clf.predict(["a goal in the match", "the stock market fell"])) == ["Sports", "Business"]
    assert choose_tfidf(texts, labels, task, seed=0)[1] == chosen


def test_majority_takes_the_train_splits_majority(tmp_path, synth_dir):
    proc = ftk_here("baseline", _recipe(tmp_path, synth_dir), "data.max_samples={train: 100}", "--method", "majority")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "runs" / "agnews_tiny_cpu-majority" / "eval-test" / "metrics.json").read_text())
    preds = {json.loads(line)["predict"] for line in
             (tmp_path / "runs" / "agnews_tiny_cpu-majority" / "eval-test" / "predictions.jsonl").open()}
    assert m["baseline"] == "majority" and len(preds) == 1 and "majority label" in m["what"]
    items = [json.loads(line) for line in
             (tmp_path / "runs" / "agnews_tiny_cpu-majority" / "eval-test" / "items.jsonl").open()]
    assert len(items) == 200 and set(items[0]) == {"id", "gold", "pred", "correct", "invalid"}
    assert m["accuracy"] == pytest.approx(sum(i["correct"] for i in items) / 200)


def test_majority_is_all_o_for_ner(tmp_path):
    proc = run_ftk("baseline", REPO / "configs" / "bionlp_gptneo_tokencls_lora_tiny.yaml", "--method", "majority",
                   f"runs_dir={tmp_path}", f"data.prepared_dir={tmp_path / 'p'}", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "bionlp_gptneo_tokencls_lora_tiny-majority" / "eval-test"
    m = json.loads((out / "metrics.json").read_text())
    assert m["f1"] == 0 and 0.5 < m["token_accuracy"] < 1 and "all-O" in m["what"]
    items = [json.loads(line) for line in (out / "items.jsonl").open()]
    assert all(set(i["pred_tags"]) == {"O"} and len(i["pred_tags"]) == len(i["gold_tags"]) for i in items)
