"""metrics.json, report.md, errors.jsonl, confusion.png and the terminal table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ftk import plots
from ftk.fileio import atomic_open, write_json, write_text
from ftk.train.runs import package_versions


def ci_method(m: dict, metric: str) -> str:
    """How the metrics file's 95% CI of `metric` was computed (files written before ftk recorded it
    used a percentile bootstrap)."""
    return m.get("ci95_method", {}).get(metric, "percentile bootstrap")


def _ci_line(m: dict) -> list[str]:
    return [f"95% CI of {k}: [{lo:.4f}, {hi:.4f}] ({ci_method(m, k)})" for k, (lo, hi) in m.get("ci95", {}).items()]


def micro_f1_note(m: dict) -> str | None:
    """Why micro-F1 is above accuracy when some outputs are invalid (None when they are equal)."""
    if not m.get("invalid") or abs(m["micro_f1"] - m["accuracy"]) < 5e-5:
        return None
    valid = m["n"] - m["invalid"]
    precision = m["accuracy"] * m["n"] / valid if valid else 0.0
    return (f"micro F1 ({m['micro_f1']:.4f}) is not accuracy ({m['accuracy']:.4f}) because {m['invalid']} outputs "
            f"are invalid: they are wrong for accuracy and recall (micro recall = accuracy), but name no label, so "
            f"micro precision counts only the {valid} valid outputs ({precision:.4f}); accuracy is the figure to quote.")


def truncation_line(m: dict) -> str | None:
    """How many prompts had their input text cut to fit cutoff_len (None when not recorded)."""
    if "truncated_prompts" not in m:
        return None
    if m.get("mode") == "head":
        return f"truncated inputs: {m['truncated_prompts']} of {m['n']} (cut at cutoff_len {m.get('cutoff_len')} tokens)"
    return (f"truncated prompts: {m['truncated_prompts']} of {m['n']} (input text cut to fit cutoff_len "
            f"{m.get('cutoff_len')}; instruction and chat template kept, as in training)")


def one_class(m: dict) -> str | None:
    """The label a classifier predicted for every item (invalid outputs aside: all-invalid is not one
    class), or None."""
    conf = m.get("confusion")
    if not conf or m.get("n", 0) < 2:
        return None
    cols = [sum(row[j] for row in conf["matrix"]) for j in range(len(conf["columns"]))]
    used = [c for c, k in zip(conf["columns"], cols) if k]
    return used[0] if len(used) == 1 and used[0] in conf["labels"] else None


def one_class_line(m: dict) -> str | None:
    lab = one_class(m)
    return None if lab is None else (f"warning: predicts one class for every item ({lab}): the model is not "
                                     "reading its input (collapsed to a prior), whatever its accuracy")


def markdown_report(m: dict) -> str:
    if m.get("kind") == "ner":
        return _markdown_ner(m)
    if m.get("kind") == "shopbench":
        return _markdown_shopbench(m)
    lines = [
        f"# {m.get('task', '')} evaluation",
        "",
        f"n = {m['n']} | accuracy = {m['accuracy']:.4f} | macro F1 = {m['macro_f1']:.4f} | "
        f"micro F1 = {m['micro_f1']:.4f} | weighted F1 = {m['weighted_f1']:.4f} | "
        f"MCC = {m['mcc']:.4f} | invalid = {m['invalid']} ({m['invalid_rate']:.2%})",
        "",
        *_ci_line(m),
        *([micro_f1_note(m)] if micro_f1_note(m) else []),
        *([truncation_line(m)] if truncation_line(m) else []),
        *([f"**{one_class_line(m)}**"] if one_class_line(m) else []),
        "",
        "| label | precision | recall | F1 | support | invalid |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    shown, more = top_classes(m, MD_CLASSES)
    for lab, c in shown:
        lines.append(f"| {lab} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | "
                     f"{c['support']} | {c['invalid']} |")
    if more:
        lines.append(f"| ({more} more labels, by support: metrics.json) | | | | | |")
    lines.append(f"| **macro** | {m['macro_precision']:.4f} | {m['macro_recall']:.4f} | "
                 f"{m['macro_f1']:.4f} | {m['n']} | {m['invalid']} |")
    conf = m.get("confusion")
    if conf is None:
        return "\n".join(lines + ["", m.get("confusion_omitted", "no confusion matrix")]) + "\n"
    lines += ["", "Confusion (rows = gold, columns = predicted):", "",
              "| gold \\ pred | " + " | ".join(conf["columns"]) + " |",
              "|---|" + "---:|" * len(conf["columns"])]
    for lab, row in zip(conf["labels"], conf["matrix"]):
        lines.append(f"| {lab} | " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines) + "\n"


MD_CLASSES, TERMINAL_CLASSES = 100, 30  # per-class rows shown; all of them are in metrics.json


def top_classes(m: dict, limit: int) -> tuple[list[tuple[str, dict]], int]:
    """The per-class rows to show: all of them, or the `limit` with the most support (and how many
    more there are)."""
    items = list(m["per_class"].items())
    if len(items) <= limit:
        return items, 0
    return sorted(items, key=lambda kv: -kv[1]["support"])[:limit], len(items) - limit


def _markdown_ner(m: dict) -> str:
    lines = [f"# {m.get('task', '')} evaluation (entity level, strict IOB2)", "",
             f"n = {m['n']} sentences | precision = {m['precision']:.4f} | recall = {m['recall']:.4f} | "
             f"F1 = {m['f1']:.4f} | token accuracy = {m['token_accuracy']:.4f} | "
             f"invalid = {m['invalid']} ({m['invalid_rate']:.2%}) | unaligned spans = {m['unaligned_spans']}",
             "", *_ci_line(m), *([truncation_line(m)] if truncation_line(m) else []), "",
             "| type | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for t, c in m["per_type"].items():
        lines.append(f"| {t} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |")
    return "\n".join(lines) + "\n"


def _markdown_shopbench(m: dict) -> str:
    lines = [f"# {m.get('task', '')} evaluation", "",
             f"n = {m['n']} | overall score = {m['score']:.4f} | invalid = {m['invalid']} ({m['invalid_rate']:.2%})",
             "", *_ci_line(m), *([truncation_line(m)] if truncation_line(m) else []), "",
             "| metric | score | rows |", "|---|---:|---:|"]
    for k, v in m["per_metric"].items():
        lines.append(f"| {k} | {v:.4f} | {m['rows_per_metric'].get(k, '')} |")
    lines += ["", "| task type | invalid |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in m["invalid_by_task_type"].items()]
    return "\n".join(lines) + "\n"


def print_table(m: dict) -> None:
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.table import Table

    if m.get("kind") in ("ner", "shopbench"):
        Console().print(Markdown(markdown_report(m)))
        return
    note = truncation_line(m)

    ci = "".join(f", {k} 95% CI [{lo:.4f}, {hi:.4f}]" for k, (lo, hi) in m.get("ci95", {}).items())
    table = Table(title=f"{m.get('task', '')}: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}, "
                        f"invalid {m['invalid_rate']:.2%} (n={m['n']}{ci})")
    for col in ("label", "precision", "recall", "F1", "support", "invalid"):
        table.add_column(col, justify="left" if col == "label" else "right")
    shown, more = top_classes(m, TERMINAL_CLASSES)
    for lab, c in shown:
        table.add_row(lab, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
                      str(c["support"]), str(c["invalid"]))
    if more:
        table.add_row(f"({more} more: metrics.json)", "", "", "", "", "")
    table.add_row("macro", f"{m['macro_precision']:.4f}", f"{m['macro_recall']:.4f}", f"{m['macro_f1']:.4f}",
                  str(m["n"]), str(m["invalid"]), style="bold")
    Console().print(table)
    if note:
        print(note)
    if one_class_line(m):
        print(one_class_line(m), file=sys.stderr, flush=True)


def confusion_png(m: dict, path: Path) -> None:
    import numpy as np

    conf = m["confusion"]
    mat = np.array(conf["matrix"])
    fig, ax = plots.figure(1.6 + 0.9 * mat.shape[1], 1.2 + 0.8 * mat.shape[0])
    ax.imshow(mat, cmap="Blues")
    ax.set_xticks(range(mat.shape[1]), conf["columns"], rotation=45, ha="right")
    ax.set_yticks(range(mat.shape[0]), conf["labels"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    thresh = mat.max() / 2 if mat.size else 0
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, str(mat[i, j]), ha="center", va="center",
                    color="white" if mat[i, j] > thresh else "black", fontsize=8)
    ax.set_title(f"{m.get('task', '')} accuracy {m['accuracy']:.3f}")
    plots.save(fig, path, dpi=120)


ITEMS = "items.jsonl"


def item_of(r: dict) -> dict:
    """One scored item without the dataset's text: id (and the source's id), gold and predicted label
    (or IOB2 tags), correct, invalid, and the label probabilities where the model scored labels. What a
    results folder publishes, so others can recompute every figure (scripts/real_results.py)."""
    item = {"id": r["id"]}
    if "source_id" in r:
        item["source_id"] = r["source_id"]
    if "gold_tags" in r:
        item.update(gold_tags=r["gold_tags"], pred_tags=r["pred_tags"])
    else:
        item.update(gold=r["label"], pred=r["extracted"])
    item.update(correct=bool(r["correct"]), invalid=bool(r["invalid"]))
    if "label_probs" in r:
        item["label_probs"] = r["label_probs"]
    return item


def write_items(path: Path, rows: list[dict]) -> None:
    with atomic_open(path) as fh:
        for r in rows:
            fh.write(json.dumps(item_of(r), ensure_ascii=False) + "\n")


def write_outputs(out_dir: Path, metrics: dict, rows: list[dict], task=None) -> None:
    """Every report file of an evaluation; with the task, a copy of its YAML (task.yaml) so the
    folder is scored and compared without the original task file."""
    metrics = dict(metrics, versions=package_versions())
    if task is not None and task.yaml_text is not None:
        write_text(out_dir / "task.yaml", task.yaml_text)
        metrics["task_sha256"] = task.sha256
    write_json(out_dir / "metrics.json", metrics)
    write_text(out_dir / "report.md", markdown_report(metrics))
    with atomic_open(out_dir / "scores.jsonl") as fh:  # per item, for paired comparisons
        for r in rows:
            item = {"id": r["id"], "correct": bool(r["correct"]), "invalid": bool(r["invalid"])}
            if r.get("score") is not None:
                item["score"] = float(r["score"]) if not isinstance(r["score"], (list, tuple)) else None
            fh.write(json.dumps(item) + "\n")
    if metrics.get("kind") in ("classification", "pair_classification", "ner"):
        write_items(out_dir / ITEMS, rows)
    with atomic_open(out_dir / "errors.jsonl") as fh:
        for r in rows:
            if not r["correct"]:
                fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    if "confusion" in metrics:
        confusion_png(metrics, out_dir / "confusion.png")
