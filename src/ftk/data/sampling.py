"""Seeded splitting and sampling of examples (deterministic: the same seed gives the same rows)."""

from __future__ import annotations

import random
from collections import defaultdict

from ftk.data.rows import Example
from ftk.errors import FtkError


def split_off(examples: list[Example], size: float | int, seed: int, what: str, *, path=None,
              key: str | None = None, strategy: str = "uniform") -> tuple[list[Example], list[Example]]:
    """(kept, taken): a seeded fraction (< 1) or count of the rows taken out, both in original order;
    `stratified` (and `balanced`, whose sampling comes after) takes the same share of every label."""
    n_out = int(round(size * len(examples))) if isinstance(size, float) and size < 1 else int(size)
    if not 0 < n_out < len(examples):
        raise FtkError(f"{size} leaves no rows on one side of the split ({len(examples)} train rows; expected a "
                       f"fraction below 1 or a count below {len(examples)})", path=path, where=key or what)
    rng = random.Random(f"{seed}-{what}")
    out_idx = set(_stratified(examples, n_out, rng) if strategy in ("stratified", "balanced")
                  else rng.sample(range(len(examples)), n_out))
    keep = [e for i, e in enumerate(examples) if i not in out_idx]
    taken = [e for i, e in enumerate(examples) if i in out_idx]
    return keep, taken


def sample(examples: list[Example], n: int | None, seed: int, strategy: str = "uniform", *, path=None,
           key: str | None = None) -> list[Example]:
    """Seeded sample of n rows in original order; `stratified` keeps label proportions, `balanced` takes
    the same number of every label (a constant answer then scores 1 / labels)."""
    if n is None or (n >= len(examples) and strategy != "balanced"):
        return examples
    rng = random.Random(f"{seed}-sample")
    if strategy == "uniform":
        keep = sorted(rng.sample(range(len(examples)), n))
    elif strategy == "balanced":
        keep = sorted(_balanced(examples, n, rng, path, key))
    else:
        keep = sorted(_stratified(examples, n, rng))
    return [examples[i] for i in keep]


def _groups(examples: list[Example]) -> dict[str | None, list[int]]:
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.label].append(i)
    return groups


def _balanced(examples: list[Example], n: int, rng: random.Random, path, key: str | None) -> list[int]:
    """n indices, n / labels of each (the first labels in sorted order get the leftover rows)."""
    groups = _groups(examples)
    labels = sorted(groups, key=str)
    if None in groups:
        raise FtkError("balanced sampling needs a label on every row (this task's rows have none); expected "
                       "uniform or stratified", path=path, where=key)
    want = {k: n // len(labels) + (i < n % len(labels)) for i, k in enumerate(labels)}
    short = [f"{k!r} has {len(groups[k])}" for k in labels if len(groups[k]) < want[k]]
    if short:
        raise FtkError(f"{n} rows balanced over {len(labels)} labels needs {max(want.values())} of each, but "
                       + ", ".join(short) + " (expected a smaller N or stratified sampling)", path=path, where=key)
    return [i for k in labels for i in rng.sample(groups[k], want[k])]


def _stratified(examples: list[Example], n: int, rng: random.Random) -> list[int]:
    """n indices, each label's share kept (largest remainders get the leftover rows)."""
    groups = _groups(examples)
    total = len(examples)
    quotas = {k: n * len(v) / total for k, v in groups.items()}
    alloc = {k: int(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - alloc[k]), str(k)))[: n - sum(alloc.values())]:
        alloc[k] += 1
    return [i for k in sorted(groups, key=str) for i in rng.sample(groups[k], alloc[k])]
