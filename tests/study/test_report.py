"""`ftk study report` on hand-made evaluations (no training): the one metric it shows is the one it
tests, p-values never read 0, the best follows the study's direction, ties are said, and the axis plot
is on a log scale with the best trial marked."""

import json

import numpy as np
import pytest
import yaml

from ftk.data.prepare import prepare
from ftk.data.records import read_records
from ftk.data.task import load_task
from ftk.eval.evaluate import evaluate_predictions
from ftk.study.report import study_report

LRS = {"t00-a": 1.0e-3, "t01-b": 3.0e-4, "t02-c": 1.0e-4}


@pytest.fixture(scope="module")
def records(tmp_path_factory, synth_dir):
    out = tmp_path_factory.mktemp("prepared")
    prepare(load_task("agnews"), {"test": str(synth_dir / "test.csv")}, out)
    return out, read_records(out / "agnews_test.jsonl")


def _outputs(records, seed, p_right):
    rng = np.random.default_rng(seed)
    return [r["output"] if rng.random() < p_right else "1: World" for r in records]


def make_study(tmp_path, records, accuracy: dict[str, float], study: dict | None = None):
    """trials/<id>.json for a base row and the trials, each with an evaluation of noisy outputs."""
    prepared, rows = records
    sdir = tmp_path / "study"
    (sdir / "trials").mkdir(parents=True)
    for tid, p in accuracy.items():
        preds = tmp_path / f"{tid}.jsonl"
        seed = round(p * 1000)  # the same accuracy asked: the very same outputs (a tie)
        preds.write_text("".join(json.dumps({"id": r["id"], "predict": o}) + "\n"
                                 for r, o in zip(rows, _outputs(rows, seed, p))))
        m, ev = evaluate_predictions(preds, "agnews", sdir / "evals" / tid, data_dir=prepared)
        run = sdir / "runs" / tid
        run.mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps({"train_seconds": 1.5}))
        base = tid == "base"
        (sdir / "trials" / f"{tid}.json").write_text(json.dumps({
            "id": tid, "base": base, "varied": {} if base else {"train.learning_rate": LRS[tid]},
            "run_dir": f"runs/{tid}", "eval_dir": f"evals/{tid}"}))
    if study is not None:
        (sdir / "study.yaml").write_text(yaml.safe_dump(study))
    return sdir


def test_deltas_and_tests_are_on_the_metric_the_table_shows(tmp_path, records):
    sdir = make_study(tmp_path, records, {"base": 0.3, "t00-a": 0.6, "t01-b": 0.9, "t02-c": 0.5})
    rep = study_report(sdir)
    rows = {r["trial"]: r for r in rep["rows"]}
    assert rep["headline"] == "accuracy" and rep["best"] == "t01-b"
    for tid in ("t00-a", "t01-b", "t02-c"):
        assert rows[tid]["vs_base"]["delta"] == pytest.approx(rows[tid]["value"] - rows["base"]["value"])
        assert rows[tid]["vs_base"]["what"] == "accuracy"
    md = (sdir / "report.md").read_text()
    assert "| accuracy 95% CI |" in md and "delta accuracy" in md and "(k+1)/(B+1)" in md and "McNemar" in md
    assert "95% CI: accuracy of each trial alone, Wilson score interval." in md
    header = (sdir / "report.csv").read_text().splitlines()[0].split(",")
    assert "vs_base_delta_accuracy" in header and "vs_best_bootstrap_accuracy_p_holm" in header

    (sdir / "study.yaml").write_text(yaml.safe_dump({"metric": "macro_f1"}))  # the study's own choice
    rep = study_report(sdir)
    rows = {r["trial"]: r for r in rep["rows"]}
    assert rep["headline"] == "macro_f1"
    m = json.loads((sdir / "evals" / "t00-a" / "metrics.json").read_text())
    assert rows["t00-a"]["value"] == m["macro_f1"] and rows["t00-a"]["ci95"] == m["ci95"]["macro_f1"]
    assert "95% CI: macro_f1 of each trial alone, percentile bootstrap over items" in (sdir / "report.md").read_text()
    assert rows["t00-a"]["vs_base"]["delta"] == pytest.approx(rows["t00-a"]["value"] - rows["base"]["value"])


def test_bootstrap_p_is_never_zero(tmp_path, records):
    sdir = make_study(tmp_path, records, {"base": 0.2, "t00-a": 0.95})
    row = next(r for r in study_report(sdir)["rows"] if r["trial"] == "t00-a")
    assert row["vs_base"]["bootstrap_p"] == pytest.approx(2 / 1001)  # every resample above 0: (0+1)/(B+1), two-sided
    assert row["vs_base"]["n_boot"] == 1000


def test_minimize_picks_the_lowest_and_ties_are_said(tmp_path, records):
    study = {"strategy": "optuna", "optuna": {"direction": "minimize"}}
    sdir = make_study(tmp_path, records, {"t00-a": 0.9, "t01-b": 0.5, "t02-c": 0.5}, study)
    rep = study_report(sdir)
    assert rep["best"] == "t01-b" and rep["tied_best"] == ["t01-b", "t02-c"]
    assert "tied: t01-b, t02-c" in (sdir / "report.md").read_text() and "lowest accuracy" in (sdir / "report.md").read_text()


def test_axis_plot_is_log_over_a_10x_range_and_marks_the_best(tmp_path, records, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    sdir = make_study(tmp_path, records, {"base": 0.3, "t00-a": 0.6, "t01-b": 0.9, "t02-c": 0.5})
    study_report(sdir)
    (ax,) = [a for a in figures[-1].axes]
    assert ax.get_xscale() == "log"
    best = [line for line in ax.get_lines() if line.get_label().startswith("best")]
    assert len(best) == 1 and list(best[0].get_xdata()) == [3.0e-4]


def test_terminal_table_fits_100_columns_and_cuts_nothing(monkeypatch, capsys):
    """Two long axes and tiny p-values: every line within 100 columns, no ellipsis, every value and
    p-value whole, the full key names said under the table."""
    from ftk.study.report import print_report

    def test(delta, p):
        return {"delta": delta, "mcnemar_p_holm": p, "bootstrap_p_holm": p}

    def row(trial, lr, kind, value, vs_base, vs_best=None):
        return {"trial": trial, "base": False, "varied": {"train.learning_rate": lr, "method.finetuning_type": kind},
                "value": value, "ci95": [value - 0.04, value + 0.04], "invalid_rate": 0.0, "one_class": None,
                "vs_base": vs_base, "vs_best": vs_best}

    rep = {"study": "study-agnews_smollm2_with_a_long_name", "headline": "accuracy", "best": "t01-73cc1e",
           "axes": ["method.finetuning_type", "train.learning_rate"], "study_dir": "/tmp/s", "plots": [],
           "rows": [{"trial": "base", "base": True, "varied": {}, "value": 0.205, "ci95": [0.17, 0.245],
                     "invalid_rate": 0.31, "one_class": None, "vs_base": None, "vs_best": None},
                    row("t00-8d7fa2", 1.0e-3, "lora", 0.815, test(0.61, 3.91e-47), test(-0.02, 2.11e-1)),
                    row("t01-73cc1e", 1.0e-4, "full", 0.835, test(0.63, 1.2e-50))]}
    monkeypatch.setenv("COLUMNS", "100")
    print_report(rep)
    out = capsys.readouterr().out
    assert all(len(line) <= 100 for line in out.splitlines()), out
    assert "…" not in out
    for text in ("0.8150", "0.775-0.855", "+0.610 p=4e-47", "+0.630 p=1e-50", "lora", "full", "0.0001", "t01-73cc1e*",
                 "finetuning_type = method.finetuning_type", "learning_rate = train.learning_rate"):
        assert text in out, text
