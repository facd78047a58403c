"""Scoring predictions against prepared records, one function per task kind.

Each returns (metrics, rows): metrics for metrics.json and rows for errors.jsonl (each row has
`correct` and `invalid`). Unparseable outputs are invalid: they count as wrong, never dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from ftk.data import spans
from ftk.data.records import user_content
from ftk.data.task import TaskSpec
from ftk.errors import FtkError
from ftk.eval import metrics as M
from ftk.eval import shopbench
from ftk.eval.extract import INVALID, make_extractor


def score(task: TaskSpec, records: list[dict], preds: dict[str, dict], *, base: bool = False) -> tuple[dict, list[dict]]:
    """Metrics and per-item rows; `base`: the answers of a base model (the task's base extraction)."""
    missing = [r["id"] for r in records if r["id"] not in preds]
    if missing:
        raise FtkError(f"{len(missing)} record(s) have no prediction, first {missing[0]!r}")
    if task.is_classification:
        metrics, rows = score_classification(task, records, preds, base=base)
    elif task.kind == "ner":
        metrics, rows = score_ner(task, records, preds)
    elif task.kind == "shopbench":
        metrics, rows = score_shopbench(records, preds)
    else:
        raise FtkError(f"task {task.name!r} of kind {task.kind!r} has nothing to score")
    metrics["task"] = task.name
    metrics["kind"] = task.kind
    metrics["base"] = base
    return metrics, rows


def _row(r: dict, text: str, extracted, correct: bool, invalid: bool) -> dict:
    row = {"id": r["id"], "prompt": user_content(r), "label": r.get("label", r.get("output")),
           "predict": text, "extracted": extracted, "correct": bool(correct), "invalid": bool(invalid)}
    if "source_id" in r:  # the source's own row id (task `id_column`)
        row["source_id"] = r["source_id"]
    return row


def classification_headline(task: TaskSpec) -> str:
    """The task's first metric when it is accuracy or macro_f1, else accuracy."""
    return task.metrics[0] if task.metrics and task.metrics[0] in ("accuracy", "macro_f1") else "accuracy"


def score_classification(task: TaskSpec, records: list[dict], preds: dict[str, dict], *,
                         base: bool = False) -> tuple[dict, list[dict]]:
    ex = task.extraction_for(base)
    extract = make_extractor(task.labels, ex.steps, ex.synonyms)
    rows = []
    for r in records:
        text = preds[r["id"]]["predict"]
        got = extract(text)
        rows.append(_row(r, text, got, got == r["label"], got == INVALID))
        if isinstance(preds[r["id"]].get("label_probs"), dict):  # choice mode, heads: kept per item
            rows[-1]["label_probs"] = preds[r["id"]]["label_probs"]
    gold, pred = [x["label"] for x in rows], [x["extracted"] for x in rows]
    metrics = M.classification_metrics(gold, pred, task.labels)
    headline = classification_headline(task)
    order = (headline, *sorted({"accuracy", "macro_f1"} - {headline}))
    metrics.update({"headline": headline,
                    "ci95": {m: list(M.classification_ci(gold, pred, task.labels, m)) for m in order},
                    "ci95_method": {m: M.ci_method(m) for m in order}})
    return metrics, rows


def score_ner(task: TaskSpec, records: list[dict], preds: dict[str, dict]) -> tuple[dict, list[dict]]:
    gold_tags, pred_tags, rows = [], [], []
    invalid = unaligned = 0
    for r in records:
        text = preds[r["id"]]["predict"]
        given = preds[r["id"]].get("tags")  # a token-classification head predicts word tags directly
        if isinstance(given, list) and len(given) == len(r["tokens"]):
            gold_tags.append(r["tags"])
            pred_tags.append(given)
            rows.append(_row(r, text, spans.target_for_tags(r["tokens"], given), given == r["tags"], False))
            rows[-1].update(gold_tags=r["tags"], pred_tags=given)
            continue
        parsed = spans.parse_entities(text, task.labels)
        if parsed.valid:
            tags, missing = spans.entities_to_tags(r["tokens"], parsed.entities)
            unaligned += missing
        else:
            tags = ["O"] * len(r["tokens"])
            invalid += 1
        gold_tags.append(r["tags"])
        pred_tags.append(tags)
        # An unparseable output is wrong, even on a sentence without entities (its all-O stand-in for
        # seqeval would otherwise match): per-item scores and the exact-match rate count it as wrong.
        rows.append(_row(r, text, spans.target_for_tags(r["tokens"], tags), parsed.valid and tags == r["tags"],
                         not parsed.valid))
        rows[-1].update(gold_tags=r["tags"], pred_tags=tags)
    metrics = M.ner_metrics(gold_tags, pred_tags)
    n = len(records)
    metrics.update({"invalid": invalid, "invalid_rate": invalid / n if n else 0.0,
                    "unaligned_spans": unaligned, "sentence_exact_match": float(np.mean([x["correct"] for x in rows]))})

    metrics["headline"] = "f1"
    metrics["ci95"] = {"f1": list(M.ner_f1_ci(gold_tags, pred_tags, n_boot=200))}
    metrics["ci95_method"] = {"f1": M.bootstrap_method(200, "sentences")}
    return metrics, rows


def score_shopbench(records: list[dict], preds: dict[str, dict]) -> tuple[dict, list[dict]]:
    """Per-row metric named by the row; per-metric means; NER micro-F1 over its rows; overall mean."""
    by_metric: dict[str, list[float]] = defaultdict(list)
    ner_counts: list[tuple[int, int, int]] = []
    by_type_invalid: dict[str, list[bool]] = defaultdict(list)
    gen_rows: list[tuple[int, str, object]] = []
    counts_by_row: dict[int, tuple[int, int, int]] = {}
    rows = []
    for r in records:
        text = preds[r["id"]]["predict"]
        tt, metric = r["task_type"], r["metric"]
        gold = json.loads(r["gold"]) if isinstance(r["gold"], str) else r["gold"]
        parsed = shopbench.parse(tt, text)
        invalid = parsed is None
        by_type_invalid[tt].append(invalid)
        if metric == "sent-transformer":
            gen_rows.append((len(rows), parsed or "", gold))
            value = None
        else:
            value = shopbench.score_row(metric, tt, parsed, gold)
            if metric == "micro f1":
                ner_counts.append(value)
                counts_by_row[len(rows)] = value
                tp, fp, fn = value
                value = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            else:
                by_metric[metric].append(float(value))
        rows.append({"id": r["id"], "prompt": user_content(r), "label": gold, "predict": text,
                     "extracted": parsed, "task_type": tt, "metric": metric, "score": value,
                     "correct": value is not None and value >= 1.0, "invalid": invalid})
    if gen_rows:
        sims = M.sentence_similarity([g for _, g, _ in gen_rows], [t for _, _, t in gen_rows])
        for (i, _, _), s in zip(gen_rows, sims):
            rows[i]["score"] = s
            rows[i]["correct"] = s >= 1.0
        by_metric["sent-transformer"] = sims
    per_metric = {k: float(np.mean(v)) for k, v in sorted(by_metric.items())}
    if ner_counts:
        tp, fp, fn = (sum(x[i] for x in ner_counts) for i in range(3))
        p = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        per_metric["micro f1"] = 2 * p * rec / (p + rec) if p + rec else 0.0
    n = len(records)
    n_invalid = sum(x["invalid"] for x in rows)
    overall = float(np.mean(list(per_metric.values()))) if per_metric else 0.0

    def overall_of(idx) -> float:
        """The overall score on a resample of rows (NER micro-F1 recomputed from its counts)."""
        sums: dict[str, list[float]] = defaultdict(list)
        tp = fp = fn = 0
        for i in idx:
            if i in counts_by_row:
                a, b, c = counts_by_row[i]
                tp, fp, fn = tp + a, fp + b, fn + c
            else:
                sums[rows[i]["metric"]].append(rows[i]["score"])
        means = [float(np.mean(v)) for v in sums.values()]
        if tp + fp + fn:
            means.append(2 * tp / (2 * tp + fp + fn))
        return float(np.mean(means)) if means else 0.0

    return {
        "n": n,
        "score": overall,
        "per_metric": per_metric,
        "rows_per_metric": {k: len(v) for k, v in sorted(by_metric.items())} | (
            {"micro f1": len(ner_counts)} if ner_counts else {}),
        "invalid": n_invalid,
        "invalid_rate": n_invalid / n if n else 0.0,
        "invalid_by_task_type": {k: int(sum(v)) for k, v in sorted(by_type_invalid.items())},
        "headline": "score",
        "ci95": {"score": list(M.bootstrap_ci(overall_of, n, n_boot=300))},
        "ci95_method": {"score": M.bootstrap_method(300, "rows")},
    }, rows
