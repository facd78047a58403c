"""Cleaning rules shared by prepare and synthetic data: exact duplicates (normalised text), near
duplicates by ROUGE-L F (as rouge-score tokenizes; S4 used >= 0.7), held-out overlap."""

from __future__ import annotations

from collections import Counter

from ftk.data.rows import Example


def norm_text(text: str) -> str:
    return " ".join(text.lower().split())


def drop_duplicates(examples: list[Example]) -> tuple[list[Example], Counter]:
    """Keep the first of each repeated input; a repeat with another target counts as conflicting."""
    first: dict[str, Example] = {}
    kept, counts = [], Counter()
    for ex in examples:
        key = norm_text(ex.input)
        if key in first:
            counts["conflicting_duplicates" if first[key].target != ex.target else "duplicates"] += 1
            continue
        first[key] = ex
        kept.append(ex)
    return kept, counts


def lcs_len(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f(a: list[str], b: list[str]) -> float:
    if not a or not b:
        return 0.0
    lcs = lcs_len(a, b)
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


def _tokens(ex: Example) -> tuple[list[str], Counter]:
    from rouge_score import tokenize

    toks = tokenize.tokenize(ex.input, None)
    return toks, Counter(toks)


def _near_any(toks: list[str], bag: Counter, pool: list[tuple[list[str], Counter]], threshold: float) -> bool:
    """ROUGE-L F with some row of `pool` >= threshold; pairs whose lengths or shared tokens cannot
    reach the threshold are skipped without computing the LCS."""
    for other, other_bag in pool:
        total = len(toks) + len(other)
        if total == 0 or 2 * min(len(toks), len(other)) / total < threshold:
            continue
        if 2 * sum((bag & other_bag).values()) / total < threshold:
            continue
        if rouge_l_f(toks, other) >= threshold:
            return True
    return False


def drop_near_duplicates(examples: list[Example], threshold: float, progress=None) -> tuple[list[Example], int]:
    """Drop rows whose ROUGE-L F (token LCS, as rouge-score tokenizes) with a kept row is >= threshold.

    Quadratic in the worst case (see `_near_any`). Meant for generated data (thousands of rows).
    `progress(n)` is told of each row done.
    """
    kept: list[Example] = []
    pool: list[tuple[list[str], Counter]] = []
    for ex in examples:
        toks, bag = _tokens(ex)
        if not _near_any(toks, bag, pool, threshold):
            kept.append(ex)
            pool.append((toks, bag))
        if progress:
            progress(1)
    return kept, len(examples) - len(kept)


def drop_near_against(examples: list[Example], reference: list[Example], threshold: float,
                      progress=None) -> tuple[list[Example], int]:
    """Examples whose ROUGE-L F with any reference row is >= threshold (leakage), dropped."""
    pool = [_tokens(ex) for ex in reference]
    kept = []
    for ex in examples:
        if not _near_any(*_tokens(ex), pool, threshold):
            kept.append(ex)
        if progress:
            progress(1)
    return kept, len(examples) - len(kept)
