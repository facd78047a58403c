"""Every plot kind ftk draws, rendered from fixtures (no training): axis ranges and scales a reader
can trust, and no legend over data (matplotlib's rendered extents, `plots.covered_points`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ftk import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures saved during a test, by file name, kept open (drawable) until the test ends."""
    import matplotlib.pyplot as plt

    saved = {}
    real_save, real_close = plots.save, plt.close

    def keep(fig, path, dpi=110):
        saved[str(path).rsplit("/", 1)[-1]] = fig
        return real_save(fig, path, dpi)

    monkeypatch.setattr(plots, "save", keep)
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    yield saved
    for fig in saved.values():
        real_close(fig)


def _readable(fig) -> None:
    assert plots.covered_points(fig) == []
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert len(fig.legends) <= 1 and not any(ax.get_legend() for ax in fig.axes)
    for leg in fig.legends:  # the legend lies outside every axes, tick labels included
        for ax in fig.axes:
            assert not leg.get_window_extent().overlaps(ax.get_tightbbox(renderer))


def test_smoothing_does_not_lag_a_falling_loss():
    """A short run whose loss falls 100x: the old bias-corrected EMA drew the end 2.4x above the
    data; the centred local-linear smoothing follows it (on a log axis, exactly for an exponential)."""
    steps = np.arange(1, 13)
    loss = 5.0 * np.exp(-0.4 * steps)
    smoothed, window = plots.smooth(loss, log=True)
    assert window == 5
    assert np.max(np.abs(smoothed / loss - 1)) < 1e-9
    rng = np.random.default_rng(0)
    noisy = 2.0 + rng.normal(0, 0.2, 200)
    flat, _ = plots.smooth(noisy)
    assert flat.std() < noisy.std() / 3 and abs(flat.mean() - 2.0) < 0.05
    assert plots.smooth([1.0, 0.5, 0.2]) is None  # too few points: raw only


def test_loss_plot(tmp_path, figures):
    from ftk.train.lossplot import plot_loss

    log = tmp_path / "trainer_log.jsonl"
    rows = [{"current_steps": s, "loss": 5.0 * math.exp(-0.4 * s), "lr": 1e-3 * (1 - s / 13)} for s in range(1, 13)]
    rows.append({"current_steps": 12, "eval_loss": 0.2})
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_loss(log, tmp_path / "loss.png", "a run " * 20)
    fig = figures["loss.png"]
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    smooth = next(line for line in ax.lines if "smoothed" in line.get_label())
    raw = next(line for line in ax.lines if line.get_label() == "train loss")
    assert np.allclose(smooth.get_ydata(), raw.get_ydata(), rtol=1e-6)
    _readable(fig)


def test_checkpoint_curve_axis_is_a_proportion_and_the_legend_is_clear(tmp_path, figures):
    from ftk.study.curves import plot_curve

    table = {"headline": "accuracy", "rows": [
        {"step": 10, "accuracy": 0.0, "ci95_low": 0.0, "ci95_high": 0.012},
        {"step": 20, "accuracy": 0.01, "ci95_low": 0.003, "ci95_high": 0.03},
        {"step": 30, "accuracy": 0.0, "ci95_low": None, "ci95_high": None}]}
    log = [{"current_steps": s, "loss": 3.0 - s / 20} for s in range(1, 31)]
    plot_curve(table, log, tmp_path / "curve.png", "a curve")
    fig = figures["curve.png"]
    lo, hi = fig.axes[0].get_ylim()
    assert lo == 0.0 and hi == pytest.approx(0.1)  # never below 0, never a 0.09-wide axis around 0
    _readable(fig)
    table["rows"] = [{"step": 10, "accuracy": 0.97, "ci95_low": 0.95, "ci95_high": 0.99}]
    plot_curve(table, log, tmp_path / "curve.png", "a curve")
    assert figures["curve.png"].axes[0].get_ylim()[1] <= 1.0


def test_study_axis_plot_log_scale_best_base_and_chance(tmp_path, figures):
    from ftk.study.report import plot_axes

    def row(trial, lr, value, base=False):
        return {"trial": trial, "base": base, "varied": {} if base else {"train.learning_rate": lr},
                "value": value, "ci95": [value - 0.04, value + 0.04]}

    rep = {"study": "s", "headline": "accuracy", "best": "t01", "axes": ["train.learning_rate"],
           "trivial": {"value": 0.25, "what": "majority class (World) for every item"},
           "rows": [row("base", None, 0.2, True), row("t00", 1e-5, 0.5), row("t01", 5e-5, 0.8), row("t02", 1e-4, 0.7)]}
    plot_axes(rep, tmp_path)
    fig = figures["axis-train.learning_rate.png"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [line.get_label() for line in ax.lines]
    assert "best 0.800" in labels and "base model 0.200" in labels
    assert "majority class (World) for every item 0.250" in labels
    lo, hi = ax.get_ylim()
    assert 0.0 <= lo < 0.2 and 0.84 <= hi <= 1.0  # the base and chance lines and every CI are in view
    _readable(fig)


def test_tsne_wrong_points_are_drawn_on_top_and_large(tmp_path, figures):
    from ftk.eval.embed import _scatter

    rng = np.random.default_rng(0)
    xy = rng.normal(size=(300, 2))
    values = ["correct"] * 290 + ["wrong"] * 10
    _scatter(xy, values, ["not evaluated", "correct", "wrong"], tmp_path / "t.png", "t-SNE",
             colors={"correct": "tab:green", "wrong": "tab:red"}, emphasise="wrong")
    fig = figures["t.png"]
    ax = fig.axes[0]
    by = {c.get_label().split(" (")[0]: c for c in ax.collections}
    assert by["wrong"].get_zorder() > by["correct"].get_zorder()
    assert by["wrong"].get_sizes()[0] >= 4 * by["correct"].get_sizes()[0]
    assert by["correct"].get_alpha() < by["wrong"].get_alpha()
    _readable(fig)


def test_confusion_matrix_png(tmp_path, figures):
    from ftk.eval.report import confusion_png

    m = {"task": "t", "accuracy": 0.5, "confusion": {"labels": ["a", "b"], "columns": ["a", "b", "[invalid]"],
                                                    "matrix": [[5, 1, 0], [3, 0, 1]]}}
    confusion_png(m, tmp_path / "confusion.png")
    fig = figures["confusion.png"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "[invalid]"]
    _readable(fig)
    assert (tmp_path / "confusion.png").stat().st_size > 5_000
