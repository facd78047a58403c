"""loss.png of a training stage, drawn from its trainer_log.jsonl: train loss raw and smoothed
(centred, no lag: `plots.smooth`), validation loss when there is one, log-scale y, learning rate on a
second axis, the legend outside the data, the full title wrapped. Written after every stage, failed ones included (what was logged is not lost)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from ftk import plots


def read_log(path: str | Path) -> list[dict]:
    """trainer_log.jsonl rows, one per (step, train|eval). Rows of the same step merge, the later one's
    values winning: a resumed run logs some steps twice, and LLaMA-Factory's closing row repeats the
    last step without its loss, which must not erase it."""
    by_step: dict[tuple[int, str], dict] = {}
    path = Path(path)
    if not path.is_file():
        return []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "current_steps" in row:
            kind = "eval" if "eval_loss" in row else "train"
            key = (int(row["current_steps"]), kind)
            by_step[key] = {**by_step.get(key, {}), **{k: v for k, v in row.items() if v is not None}}
    return [by_step[k] for k in sorted(by_step)]


def plot_loss(trainer_log: str | Path, out_png: str | Path, title: str) -> Path | None:
    """Draw the figure; None when the log holds no loss yet."""
    rows = read_log(trainer_log)
    train = [(r["current_steps"], r["loss"]) for r in rows if r.get("loss") is not None]
    evals = [(r["current_steps"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    lrs = [(r["current_steps"], r["lr"]) for r in rows if r.get("lr") is not None]
    if not train and not evals:
        return None
    fig, ax = plots.figure(9, 4.8)
    values = [v for _, v in train + evals]
    log = bool(values) and min(values) > 0
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, label="train loss",
                marker="o" if len(losses) < 3 else None)  # one or two logged steps draw no line
        smoothed = plots.smooth(losses, log=log)
        if smoothed is not None:
            ax.plot(steps, smoothed[0], color="tab:blue", linewidth=2,
                    label=f"train loss (smoothed, {smoothed[1]}-point centred window)")
    if evals:
        steps, losses = zip(*evals)
        ax.plot(steps, losses, color="tab:orange", marker="o", linewidth=1.5, label="validation loss")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (log scale)" if log else "loss")
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if lrs:
        ax2 = ax.twinx()
        steps, lr = zip(*lrs)
        ax2.plot(steps, lr, color="tab:green", linestyle="--", linewidth=1, label="learning rate")
        ax2.set_ylabel("learning rate")
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
        plots.legend_outside(ax2, handles, labels)  # on the top axes, outside both
    else:
        plots.legend_outside(ax, handles, labels)
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    return plots.save(fig, out_png)
