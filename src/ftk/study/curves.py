"""`ftk eval RUN --checkpoints all|STEP,...`: the headline metric at each saved checkpoint (S0's
steps table), each checkpoint evaluated into its own resumable folder (`eval-<split>-ckpt<step>/`),
with the train and validation loss of the trainer log on the same figure.

Writes RUN/curve-<split>/: curve.json, curve.csv, curve.md and curve.png.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from ftk import plots
from ftk.errors import FtkError
from ftk.eval.evaluate import evaluate_run
from ftk.fileio import write_json, write_text
from ftk.train.lossplot import read_log
from ftk.train.runs import read_run, result_file


def saved_steps(model_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in Path(model_dir).glob("checkpoint-*")
                  if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir())


def parse_steps(spec: str, saved: list[int], where: Path) -> list[int]:
    """`all`, or steps separated by commas, each one of the saved checkpoints."""
    if not saved:
        raise FtkError("no saved checkpoints (set `train.save_steps` below the number of steps)", path=where)
    if spec.strip() == "all":
        return saved
    steps = []
    for part in spec.split(","):
        if not (part.strip().isascii() and part.strip().isdigit()):
            raise FtkError(f"--checkpoints {spec!r}: expected all or steps like 200,400 (saved: {saved})")
        if int(part) not in saved:
            raise FtkError(f"--checkpoints: no checkpoint at step {int(part)} (saved: {saved})", path=where)
        steps.append(int(part))
    return sorted(set(steps))


def _loss_at(rows: list[dict], step: int, key: str) -> float | None:
    """The last value of `key` logged at or before `step`."""
    vals = [r[key] for r in rows if r.get(key) is not None and r["current_steps"] <= step]
    return vals[-1] if vals else None


def checkpoint_curve(run_dir: str | Path, spec: str, *, split: str | None = None, mode: str | None = None,
                     batch_size: int | None = None, limit: int | None = None, engine: str = "hf",
                     fresh: bool = False) -> tuple[dict, Path]:
    run_dir = Path(run_dir)
    manifest, recipe, _ = read_run(run_dir)
    model_dir = Path(manifest.get("model_dir") or run_dir / "model")
    steps = parse_steps(spec, saved_steps(model_dir), model_dir)
    log = read_log(result_file(model_dir, "trainer_log.jsonl"))
    rows = []
    metrics = {}
    for step in steps:
        metrics, eval_dir = evaluate_run(run_dir, split=split, mode=mode, batch_size=batch_size, limit=limit,
                                         engine=engine, checkpoint=str(step), fresh=fresh)
        head = metrics["headline"]
        lo, hi = metrics.get("ci95", {}).get(head, [None, None])
        rows.append({"step": step, head: metrics[head], "ci95_low": lo, "ci95_high": hi,
                     "invalid_rate": metrics.get("invalid_rate"), "train_loss": _loss_at(log, step, "loss"),
                     "eval_loss": _loss_at(log, step, "eval_loss"), "eval_dir": str(eval_dir)})
    head = metrics["headline"]
    table = {"run_dir": str(run_dir), "split": metrics["split"], "mode": metrics["mode"], "headline": head,
             "task": metrics["task"], "rows": rows}
    out_dir = run_dir / (f"curve-{metrics['split']}" + ("" if metrics["mode"] in ("generate", "head")
                                                        else f"-{metrics['mode']}"))
    write_json(out_dir / "curve.json", table)
    write_text(out_dir / "curve.csv", _csv(rows))
    write_text(out_dir / "curve.md", curve_markdown(table))
    plot_curve(table, log, out_dir / "curve.png", f"{manifest.get('name')}: {head} by checkpoint")
    return table, out_dir


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[k for k in rows[0] if k != "eval_dir"], extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _f(x, spec: str = ".4f") -> str:
    return "" if x is None else format(x, spec)


def curve_markdown(table: dict) -> str:
    head = table["headline"]
    lines = [f"# {table['task']}: {head} by checkpoint ({table['split']}, {table['mode']})", "",
             f"| step | {head} | 95% CI | invalid | train loss | eval loss |", "|---:|---:|---|---:|---:|---:|"]
    for r in table["rows"]:
        ci = f"[{_f(r['ci95_low'])}, {_f(r['ci95_high'])}]" if r["ci95_low"] is not None else ""
        lines.append(f"| {r['step']} | {_f(r[head])} | {ci} | {_f(r['invalid_rate'], '.2%')} | "
                     f"{_f(r['train_loss'])} | {_f(r['eval_loss'])} |")
    return "\n".join(lines) + "\n"


def print_curve(table: dict) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(curve_markdown(table)))


def plot_curve(table: dict, log: list[dict], path: Path, title: str) -> None:
    import textwrap

    head, rows = table["headline"], table["rows"]
    fig, ax = plots.figure(9, 4.8)
    steps = [r["step"] for r in rows]
    vals = [r[head] for r in rows]
    lows = [r["ci95_low"] if r["ci95_low"] is not None else r[head] for r in rows]
    highs = [r["ci95_high"] if r["ci95_high"] is not None else r[head] for r in rows]
    ax.errorbar(steps, vals, yerr=[[v - lo for v, lo in zip(vals, lows)], [hi - v for v, hi in zip(vals, highs)]],
                color="tab:red", marker="o", capsize=3, linewidth=2, label=f"{head} (95% CI)")
    for s, v in zip(steps, vals):
        ax.annotate(f"{v:.3f}", (s, v), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    plots.unit_ylim(ax, head, lows, highs)
    ax.set_xlabel("step")
    ax.set_ylabel(head)
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    train = [(r["current_steps"], r["loss"]) for r in log if r.get("loss") is not None]
    evals = [(r["current_steps"], r["eval_loss"]) for r in log if r.get("eval_loss") is not None]
    if train:
        ax2.plot(*zip(*train), color="tab:blue", alpha=0.5, linewidth=1, label="train loss")
    if evals:
        ax2.plot(*zip(*evals), color="tab:orange", marker="s", linewidth=1, label="validation loss")
    ax2.set_ylabel("loss")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    plots.legend_outside(ax2, h1 + h2, l1 + l2)
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    plots.save(fig, path)


def load_curve(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
