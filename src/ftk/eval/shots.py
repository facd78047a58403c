"""In-context (K-shot) prompts for a base model: the first question a reviewer asks of a fine-tuned
row is whether prompting the same model with a few examples already gets there.

The K examples come from the recipe's prepared train split (the very file the run recorded), drawn
with the recipe's seed and balanced across labels (round-robin over the labels in a seeded order,
so no label sits in one block at the end); open tasks (NER, generation) draw K rows uniformly. The
same K examples, in the same order, precede every item, rendered through the chat template as
earlier turns: user (the example's prompt) / assistant (its target), ..., then the item's user turn
(train/prompts.py `Prompter(shots=...)`). Over-long prompts are cut the way training cuts: each
example's text is fitted to cutoff_len / (K + 1) tokens first (its answer kept), then the item's text
is fitted to what is left, so the framing, the examples' answers and the item's instruction stay.
"""

from __future__ import annotations

import random

from ftk.data.task import TaskSpec
from ftk.errors import FtkError

MAX_SHOTS = 64


def draw_shots(train: list[dict], task: TaskSpec, k: int, seed: int, *, path=None) -> list[dict]:
    """K train records, seeded, balanced across labels for classification tasks."""
    if not 1 <= k <= MAX_SHOTS:
        raise FtkError(f"--shots {k}: expected 1..{MAX_SHOTS} examples")
    if len(train) < k:
        raise FtkError(f"--shots {k}: the prepared train split has {len(train)} row(s)", path=path)
    rng = random.Random(seed)
    if not task.is_classification:
        return [train[i] for i in sorted(rng.sample(range(len(train)), k))]
    pools = {lab: [r for r in train if r.get("label") == lab] for lab in task.labels}
    order = [lab for lab in task.labels if pools[lab]]
    if sum(len(pools[lab]) for lab in order) < k:
        raise FtkError(f"--shots {k}: the prepared train split has fewer labelled rows", path=path)
    rng.shuffle(order)
    for lab in order:
        rng.shuffle(pools[lab])
    picked: list[dict] = []
    i = 0
    while len(picked) < k:
        lab = order[i % len(order)]
        if pools[lab]:
            picked.append(pools[lab].pop())
        i += 1
    return picked


def with_instruction(records: list[dict], prefix: str | None) -> list[dict]:
    """The records with the base model's instruction prepended (the same for examples and items)."""
    return [dict(r, instruction=prefix + r.get("instruction", "")) for r in records] if prefix else records
