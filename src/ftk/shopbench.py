"""ShopBench (Amazon KDD Cup 2024) targets, output parsers and per-row scoring.

Parsers follow the official starter kit's rules; a parse failure is `None` (invalid: scores 0
and is counted), never skipped.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from ftk import metrics as M

TASK_TYPES = ("multiple-choice", "retrieval", "ranking", "named_entity_recognition", "generation")


def target(task_type: str, gold: Any) -> str:
    """The training target text for a row's gold `output_field`."""
    if task_type == "multiple-choice":
        return str(int(gold))
    if task_type == "retrieval":
        return ", ".join(str(int(x)) for x in gold)
    if task_type == "ranking":  # gold = relevance weight of item i+1; target = items by weight
        order = sorted(range(len(gold)), key=lambda i: -float(gold[i]))
        return ", ".join(str(i + 1) for i in order)
    if task_type == "named_entity_recognition":
        return json.dumps(list(gold), ensure_ascii=False)
    return str(gold)


def _ints(text: str) -> list[int]:
    cleaned = "".join(c for c in text if c.isnumeric() or c in ", ")
    out = []
    for item in cleaned.split(","):
        item = item.strip()
        if item.isdigit():
            out.append(int(item))
    return out


def parse(task_type: str, text: str) -> Any:
    text = text or ""
    if task_type == "multiple-choice":
        m = re.match(r"\s*(\d)", text)
        return int(m.group(1)) if m else None
    if task_type == "retrieval":
        items = _ints(text)[:3]
        return items or None
    if task_type == "ranking":
        items = _ints(text)[:5]
        return items if items and len(items) == len(set(items)) else None
    if task_type == "named_entity_recognition":
        try:
            value = ast.literal_eval(text.strip())
            if isinstance(value, list) and all(isinstance(x, str) for x in value):
                return value
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            pass
        items = [x.strip() for x in text.split(",") if x.strip()]
        return items or None
    stripped = text.strip()
    return stripped if stripped else None


def score_row(metric: str, task_type: str, parsed: Any, gold: Any) -> float | tuple[int, int, int]:
    """One row's score; NER returns (tp, fp, fn) for micro-F1 over the whole set."""
    if metric == "accuracy":
        return float(parsed is not None and int(parsed) == int(gold))
    if metric == "hit rate@3":
        return M.hit_rate_3(parsed or [], gold)
    if metric == "ndcg":
        return M.ndcg(parsed or [], list(gold))
    if metric == "micro f1":
        return M.entity_tp_fp_fn(parsed or [], gold)
    if metric == "rougel":
        return M.rouge_l(parsed or "", gold)
    if metric == "bleu":
        return M.bleu4(parsed or "", gold)
    if metric == "jp-bleu":
        return M.bleu4(parsed or "", gold, tokenize=M.jp_bleu_tokenizer())
    raise ValueError(f"unknown ShopBench metric {metric!r}")
