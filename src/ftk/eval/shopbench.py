"""ShopBench (Amazon KDD Cup 2024) output parsers and per-row scoring (targets: ftk.data.shopbench).

Parsers follow the official starter kit's rules; a parse failure is `None` (invalid: scores 0
and is counted), never skipped.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ftk.eval import metrics as M


def _ints(text: str) -> list[int]:
    cleaned = "".join(c for c in text if c.isnumeric() or c in ", ")
    out = []
    for item in cleaned.split(","):
        item = item.strip()
        if (item.isascii() and item.isdigit()):
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
