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


def drop_near_duplicates(examples: list[Example], threshold: float) -> tuple[list[Example], int]:
    """Drop rows whose ROUGE-L F (token LCS, as rouge-score tokenizes) with a kept row is >= threshold.

    Quadratic in the worst case; pairs whose lengths or shared tokens cannot reach the threshold
    are skipped without computing the LCS. Meant for generated data (thousands of rows).
    """
    from rouge_score import tokenize

    kept: list[Example] = []
    kept_toks: list[tuple[list[str], Counter]] = []
    dropped = 0
    for ex in examples:
        toks = tokenize.tokenize(ex.input, None)
        bag = Counter(toks)
        dup = False
        for other, other_bag in kept_toks:
            total = len(toks) + len(other)
            if total == 0 or 2 * min(len(toks), len(other)) / total < threshold:
                continue
            if 2 * sum((bag & other_bag).values()) / total < threshold:
                continue
            if rouge_l_f(toks, other) >= threshold:
                dup = True
                break
        if dup:
            dropped += 1
            continue
        kept.append(ex)
        kept_toks.append((toks, bag))
    return kept, dropped
