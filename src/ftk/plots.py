"""What every ftk figure shares: a headless figure with matplotlib's constrained layout, the legend
outside the plotting area (it can never cover a point), axis ranges that a metric can take, a
smoothing that does not lag, and an atomic PNG write. `covered_points` is matplotlib's own check
(rendered extents) that the tests run on every plot kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ftk.fileio import atomic_open

# metrics whose values are proportions: their axis is kept inside [0, 1]
UNIT_METRICS = {"accuracy", "macro_f1", "micro_f1", "weighted_f1", "f1", "precision", "recall", "score",
                "token_accuracy", "sentence_exact_match", "invalid_rate"}


def figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), layout="constrained")


def legend_outside(ax, handles=None, labels=None, **kw):
    """The figure's legend to the right of everything, a twin axis's ticks included (constrained
    layout makes room for it)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    return ax.figure.legend(handles, labels, loc="outside right upper", fontsize=8, **kw)


def unit_ylim(ax, metric: str, lows, highs, *, pad: float = 0.05, min_span: float = 0.1) -> None:
    """A proportion's axis: the data (with its CIs) plus a margin, never below 0 or above 1 and never
    narrower than `min_span` (an axis from -0.04 to 0.05 for an accuracy of 0 says nothing)."""
    if metric not in UNIT_METRICS:
        return
    values = [v for v in (*lows, *highs) if v is not None and np.isfinite(v)]
    if not values:
        return
    lo, hi = max(0.0, min(values) - pad), min(1.0, max(values) + pad)
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
        if lo < 0:
            lo, hi = 0.0, min_span
        if hi > 1:
            lo, hi = 1.0 - min_span, 1.0
    ax.set_ylim(lo, hi)


def smooth(values, *, log: bool = False) -> tuple[np.ndarray, int] | None:
    """A centred local-linear smoothing (scipy's Savitzky-Golay, order 1, fitted at the ends): no lag,
    so a falling loss is not drawn above itself as an exponential moving average is on a short run.
    In log space for a log-scale axis. The window is about a tenth of the points (odd, 5 at least);
    None when there are too few points to smooth."""
    from scipy.signal import savgol_filter

    y = np.asarray(values, dtype=float)
    if len(y) < 7:
        return None
    window = max(5, (len(y) // 10) | 1)
    z = np.log(y) if log else y
    out = savgol_filter(z, window, 1, mode="interp")
    return (np.exp(out) if log else out), window


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    plt.close(fig)
    return path


def covered_points(fig) -> list[tuple[str, float, float]]:
    """Data points (lines, markers, scatter) that a legend of the figure covers, in display
    coordinates after a full draw: [] for a readable figure."""
    fig.canvas.draw()
    boxes = [leg.get_window_extent() for ax in fig.axes for leg in [ax.get_legend()] if leg is not None]
    boxes += [leg.get_window_extent() for leg in fig.legends]
    hits = []
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.collections]:
            if hasattr(artist, "get_xydata"):
                pts = artist.get_xydata()
            elif hasattr(artist, "get_offsets"):
                pts = artist.get_offsets()
            else:
                continue
            pts = np.asarray(pts, dtype=float)
            if pts.size == 0 or pts.ndim != 2:
                continue
            disp = artist.get_transform().transform(pts) if hasattr(artist, "get_xydata") else \
                artist.get_offset_transform().transform(pts)
            for (x, y) in disp:
                if any(b.contains(x, y) for b in boxes):
                    hits.append((artist.get_label(), float(x), float(y)))
    return hits
