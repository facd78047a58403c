"""Seeded splitting and sampling of examples (deterministic: the same seed gives the same rows)."""

from __future__ import annotations

import random
from collections import defaultdict

from ftk.data.rows import Example
from ftk.errors import FtkError


def split_off(examples: list[Example], size: float | int, seed: int, what: str, *, path=None,
              key: str | None = None, strategy: str = "uniform") -> tuple[list[Example], list[Example]]:
    """(kept, taken): a seeded fraction (< 1) or count of the rows taken out, both in original order;
    `stratified` takes the same share of every label."""
    n_out = int(round(size * len(examples))) if isinstance(size, float) and size < 1 else int(size)
    if not 0 < n_out < len(examples):
        raise FtkError(f"{size} leaves no rows on one side of the split ({len(examples)} train rows; expected a "
                       f"fraction below 1 or a count below {len(examples)})", path=path, where=key or what)
    rng = random.Random(f"{seed}-{what}")
    out_idx = set(_stratified(examples, n_out, rng) if strategy == "stratified"
                  else rng.sample(range(len(examples)), n_out))
    keep = [e for i, e in enumerate(examples) if i not in out_idx]
    taken = [e for i, e in enumerate(examples) if i in out_idx]
    return keep, taken


def sample(examples: list[Example], n: int | None, seed: int, strategy: str = "uniform") -> list[Example]:
    """Seeded sample of n rows in original order; `stratified` keeps label proportions."""
    if n is None or n >= len(examples):
        return examples
    rng = random.Random(f"{seed}-sample")
    if strategy == "uniform":
        keep = sorted(rng.sample(range(len(examples)), n))
        return [examples[i] for i in keep]
    keep = sorted(_stratified(examples, n, rng))
    return [examples[i] for i in keep]


def _stratified(examples: list[Example], n: int, rng: random.Random) -> list[int]:
    """n indices, each label's share kept (largest remainders get the leftover rows)."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.label].append(i)
    total = len(examples)
    quotas = {k: n * len(v) / total for k, v in groups.items()}
    alloc = {k: int(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - alloc[k]), str(k)))[: n - sum(alloc.values())]:
        alloc[k] += 1
    return [i for k in sorted(groups, key=str) for i in rng.sample(groups[k], alloc[k])]
