"""ShopBench (Amazon KDD Cup 2024) task types and the training target for a row's gold answer."""

from __future__ import annotations

import json
from typing import Any

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
