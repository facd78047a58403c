"""`ftk eval --predictions` and `ftk compare` on hand-made prediction files."""

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from conftest import run_ftk
from ftk.data.prepare import prepare
from ftk.data.records import read_records
from ftk.data.task import load_task
from ftk.errors import FtkError
from ftk.eval.compare import compare, mcnemar
from ftk.eval.evaluate import evaluate_predictions


@pytest.fixture()
def prepared(tmp_path, synth_dir):
    out = tmp_path / "prepared"
    prepare(load_task("agnews"), {"test": str(synth_dir / "test.csv")}, out)
    return out


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _noisy_outputs(records, seed, p_right=0.8):
    rng = np.random.default_rng(seed)
    outs = []
    for r in records:
        x = rng.random()
        outs.append(r["output"] if x < p_right else ("no idea" if x < p_right + 0.05 else "2: Sports"))
    return outs


def test_llamafactory_format_matched_by_order(tmp_path, prepared):
    records = read_records(prepared / "agnews_test.jsonl")
    outs = _noisy_outputs(records, 0)
    lf = _write(tmp_path / "generated_predictions.jsonl",
                [{"prompt": "p", "predict": o, "label": r["output"]} for r, o in zip(records, outs)])
    m, out = evaluate_predictions(lf, "agnews", tmp_path / "ev", data_dir=prepared)
    gold = [r["label"] for r in records]
    pred = [r["output"].split(": ")[1] if r["output"] == o else ("[invalid]" if o == "no idea" else "Sports")
            for r, o in zip(records, outs)]
    assert m["n"] == 200 and m["format"] == "llamafactory"
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-9)
    assert m["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=load_task("agnews").labels,
                                                   average="macro", zero_division=0), abs=1e-9)
    assert m["invalid"] == outs.count("no idea")
    lo, hi = m["ci95"]["accuracy"]
    assert lo <= m["accuracy"] <= hi
    for name in ("metrics.json", "report.md", "confusion.png", "errors.jsonl", "predictions.jsonl"):
        assert (out / name).exists()
    # report.md says how each interval was computed, and why micro-F1 is not accuracy with invalid outputs
    report = (out / "report.md").read_text()
    assert m["ci95_method"] == {"accuracy": "Wilson score interval",
                                "macro_f1": "percentile bootstrap over items, B = 1,000 resamples, seed 0"}
    assert f"95% CI of accuracy: [{lo:.4f}, {hi:.4f}] (Wilson score interval)" in report
    assert "95% CI of macro_f1:" in report and "(percentile bootstrap over items, B = 1,000" in report
    assert m["invalid"] > 0 and m["micro_f1"] > m["accuracy"]
    assert f"micro F1 ({m['micro_f1']:.4f}) is not accuracy ({m['accuracy']:.4f}) because {m['invalid']} outputs" in report
    errors = [json.loads(l) for l in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == sum(g != p for g, p in zip(gold, pred))
    assert sum(e["invalid"] for e in errors) == m["invalid"]
    # Same file without --data: gold from each row's label text.
    m2, _ = evaluate_predictions(lf, "agnews", tmp_path / "ev2")
    assert m2["accuracy"] == m["accuracy"]


def test_ftk_format_by_id_and_compare(tmp_path, prepared):
    records = read_records(prepared / "agnews_test.jsonl")
    a = _write(tmp_path / "a.jsonl", [{"id": r["id"], "predict": o}
                                      for r, o in zip(records, _noisy_outputs(records, 1, 0.6))])
    b = _write(tmp_path / "b.jsonl", [{"id": r["id"], "predict": o}
                                      for r, o in zip(reversed(records), _noisy_outputs(records[::-1], 2, 0.9))])
    ma, da = evaluate_predictions(a, "agnews", tmp_path / "ea", data_dir=prepared)
    mb, db = evaluate_predictions(b, "agnews", tmp_path / "eb", data_dir=prepared)
    c = compare(da, db)
    assert c["n"] == 200
    assert c["metrics"]["accuracy"]["delta"] == pytest.approx(mb["accuracy"] - ma["accuracy"])
    assert c["mcnemar"]["p_value"] < 0.01  # 0.6 vs 0.9 accuracy on 200 items
    assert c["paired_bootstrap_macro_f1"]["delta"] > 0
    lo, hi = c["paired_bootstrap_macro_f1"]["ci95"]
    assert lo > 0
    proc = run_ftk("compare", da, db, "--out", tmp_path / "cmp")
    assert proc.returncode == 0, proc.stderr
    assert "McNemar" in proc.stdout and (tmp_path / "cmp" / "compare.md").exists()


def test_mcnemar_against_statsmodels_formula():
    a = np.array([True] * 30 + [False] * 10 + [True] * 50)
    b = np.array([False] * 30 + [True] * 10 + [True] * 50)
    r = mcnemar(a, b)
    from scipy.stats import chi2

    assert (r["a_only_correct"], r["b_only_correct"]) == (30, 10)
    assert r["p_value"] == pytest.approx(chi2.sf((abs(30 - 10) - 1) ** 2 / 40, 1))
    small = mcnemar(np.array([True, True, False]), np.array([False, False, False]))
    assert small["method"] == "exact binomial" and small["p_value"] == pytest.approx(0.5)


@pytest.mark.parametrize("content, expected", [
    ("not json\n", ":1: not valid JSON"),
    ('{"id": "agnews-test-000000"}\n', ":1: missing field `predict`"),
    ('{"prompt": "p", "predict": "1"}\n', ":1: missing field `label`"),
    ('{"id": "nope", "predict": "1"}\n', ":1: id 'nope' is not in the prepared split"),
    ('{"prompt": "p", "predict": "1", "label": "1: World"}\n', "1 predictions but the prepared split"),
])
def test_bad_prediction_files_one_line_exit_2(tmp_path, prepared, content, expected):
    f = tmp_path / "preds.jsonl"
    f.write_text(content)
    proc = run_ftk("eval", "--predictions", f, "--task", "agnews", "--data", prepared, "--out", tmp_path / "o")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(f) in lines[0] and expected in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_task_exit_2(tmp_path):
    f = _write(tmp_path / "p.jsonl", [{"id": "x", "predict": "1"}])
    proc = run_ftk("eval", "--predictions", f, "--task", "agnewz", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "did you mean 'agnews'" in proc.stderr


def test_gold_label_not_parseable_without_data(tmp_path):
    f = _write(tmp_path / "p.jsonl", [{"prompt": "p", "predict": "1", "label": "who knows"}])
    with pytest.raises(FtkError, match=":1: gold `label` 'who knows'"):
        evaluate_predictions(f, "agnews", tmp_path / "o")


def test_compare_shopbench_evaluations(tmp_path):
    """Non-classification kinds compare through per-item scores (S4 base vs fine-tuned)."""
    from conftest import realdata

    src = realdata("shopbench", "development.json")
    prepared = tmp_path / "p"
    prepare(load_task("shopbench"), {"test": str(src)}, prepared)
    recs = read_records(prepared / "shopbench_test.jsonl")
    good = _write(tmp_path / "good.jsonl", [{"id": r["id"], "predict": r["output"]} for r in recs])
    bad = _write(tmp_path / "bad.jsonl", [{"id": r["id"], "predict": "0" if i % 2 else r["output"]}
                                          for i, r in enumerate(recs)])
    mg, dg = evaluate_predictions(good, "shopbench", tmp_path / "eg", data_dir=prepared)
    mb, db = evaluate_predictions(bad, "shopbench", tmp_path / "eb", data_dir=prepared)
    assert mg["per_metric"]["accuracy"] == 1.0 and mg["per_metric"]["hit rate@3"] == 1.0
    assert mg["per_metric"]["ndcg"] == pytest.approx(1.0) and mg["per_metric"]["micro f1"] == 1.0
    c = compare(db, dg)
    assert c["n"] == 96 and c["metrics"]["score"]["delta"] > 0
    assert c["mcnemar"]["b_only_correct"] > 0 and c["mcnemar"]["a_only_correct"] == 0
    assert c["paired_bootstrap_item_score"]["delta"] > 0


def test_compare_refuses_evaluations_of_different_test_data(tmp_path, synth_dir):
    """Same ids (per split and position), other items: each scores 1.0 on its own data; compared item by
    item against A's gold they would read 1.0 vs 0.0 with a tiny p. Refused, one line, exit 2."""
    from ftk.data.synth import write_dataset

    other = tmp_path / "other"
    write_dataset(other, n_train=10, n_test=200, seed=5)
    dirs = []
    for name, source in (("a", synth_dir), ("b", other)):
        prepared = tmp_path / f"prep-{name}"
        prepare(load_task("agnews"), {"test": str(source / "test.csv")}, prepared)
        records = read_records(prepared / "agnews_test.jsonl")
        preds = _write(tmp_path / f"{name}.jsonl", [{"id": r["id"], "predict": r["output"]} for r in records])
        m, d = evaluate_predictions(preds, "agnews", tmp_path / f"e{name}", data_dir=prepared)
        assert m["accuracy"] == 1.0
        dirs.append(d)
    with pytest.raises(FtkError, match="different gold answers"):
        compare(*dirs)
    proc = run_ftk("compare", *dirs)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "different gold answers" in proc.stderr


def test_one_class_for_every_item_is_a_warning_in_the_report_and_on_the_screen(tmp_path, prepared):
    """A collapsed model (every answer "4: Sci/Tech", as the first real SmolLM2 AG News run did) is
    said in report.md and on stderr; a model that answers more than one class, or only invalid text,
    is not called one-class."""
    records = read_records(prepared / "agnews_test.jsonl")
    one = _write(tmp_path / "one.jsonl", [{"id": r["id"], "predict": "4: Sci/Tech"} for r in records])
    proc = run_ftk("eval", "--predictions", one, "--task", "agnews", "--data", prepared, "--out", tmp_path / "e1")
    assert proc.returncode == 0 and "predicts one class for every item (Sci/Tech)" in proc.stderr
    assert "predicts one class for every item (Sci/Tech)" in (tmp_path / "e1" / "report.md").read_text()
    from ftk.eval.report import one_class

    m, _ = evaluate_predictions(_write(tmp_path / "two.jsonl", [{"id": r["id"], "predict": o} for r, o in
                                                                 zip(records, _noisy_outputs(records, 1))]),
                                "agnews", tmp_path / "e2", data_dir=prepared)
    assert one_class(m) is None and "one class" not in (tmp_path / "e2" / "report.md").read_text()
    m, _ = evaluate_predictions(_write(tmp_path / "inv.jsonl", [{"id": r["id"], "predict": "?"} for r in records]),
                                "agnews", tmp_path / "e3", data_dir=prepared)
    assert one_class(m) is None  # all invalid: said by the invalid rate, not as a class
