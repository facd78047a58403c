"""Model output text -> label, as a pipeline of named steps (pure functions).

A task declares its steps, e.g. `[strip, number_or_label, take_first]`. Each step maps a list of
candidate strings to a new list; the final answer is the first candidate that is a label, else
`INVALID`. Unparseable output is never dropped: it becomes `INVALID` and counts as wrong.

>>> make_extractor(["World", "Sports", "Business", "Sci/Tech"])("3: Business")
'Business'
>>> make_extractor(["World", "Sports", "Business", "Sci/Tech"])("no idea")
'[invalid]'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ftk.data.task import INVALID_LABEL

INVALID = INVALID_LABEL  # a task may not name a label so (data/task.py)

Step = Callable[[list[str], "LabelIndex"], list[str]]


class LabelIndex:
    """Look-ups from normalised text, 1-based numbers and synonyms to label names."""

    def __init__(self, labels: Sequence[str], synonyms: dict[str, str] | None = None):
        self.labels = list(labels)
        self.by_norm = {_norm(lab): lab for lab in self.labels}
        for text, lab in (synonyms or {}).items():
            self.by_norm[_norm(text)] = lab
        self.by_number = {str(i + 1): lab for i, lab in enumerate(self.labels)}
        # Longest names first so "Sci/Tech" wins over a shorter label inside it.
        alts = sorted(self.by_norm, key=len, reverse=True)
        self.name_re = re.compile(r"(?<![\w/])(" + "|".join(re.escape(a) for a in alts) + r")(?![\w/])")


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .,:;!?\"'`()[]{}")


def step_strip(cands: list[str], idx: LabelIndex) -> list[str]:
    return [c.strip() for c in cands]


def step_number_or_label(cands: list[str], idx: LabelIndex) -> list[str]:
    """`3`, `3: Business`, `business`, ` Business.` -> `Business`.

    A leading number decides when it is a label number and any name after it agrees (or is
    absent); otherwise the first label name found in the text decides.
    """
    out = []
    for c in cands:
        whole = idx.by_norm.get(_norm(c))
        if whole:
            out.append(whole)
            continue
        m = re.match(r"\s*(\d+)\s*(?:[:.)\-]\s*(.*))?$", c, re.S)
        if m and m.group(1) in idx.by_number:
            by_num = idx.by_number[m.group(1)]
            rest = (m.group(2) or "").strip()
            named = _first_name(rest, idx) if rest else None
            if named is None or named == by_num:
                out.append(by_num)
                continue
            out.append(INVALID)  # number and name disagree: ambiguous
            continue
        named = _first_name(c, idx)
        out.append(named if named else INVALID)
    return out


def step_label(cands: list[str], idx: LabelIndex) -> list[str]:
    """Label names only (no 1-based numbers): for tasks whose labels are themselves digits."""
    out = []
    for c in cands:
        whole = idx.by_norm.get(_norm(c))
        named = whole or _first_name(c, idx)
        out.append(named if named else INVALID)
    return out


def step_option_letter(cands: list[str], idx: LabelIndex) -> list[str]:
    """`B`, `(b)`, `b.`, `Answer: C` -> the label at that position (A = first label)."""
    out = []
    for c in cands:
        m = re.match(r"\s*(?:answer\s*[:=]?\s*)?\(?([A-Za-z])(?:[).:]|\s|$)", c, re.I)
        pos = ord(m.group(1).upper()) - ord("A") if m else -1
        out.append(idx.labels[pos] if 0 <= pos < len(idx.labels) else INVALID)
    return out


def step_regex(pattern: str, group: int = 1):
    """A step keeping group `group` of the first match of `pattern` (no match -> invalid)."""
    rx = re.compile(pattern, re.S | re.I)

    def step(cands: list[str], idx: LabelIndex) -> list[str]:
        out = []
        for c in cands:
            m = rx.search(c)
            out.append(m.group(group) if m else INVALID)
        return out

    return step


def step_after(key: str):
    """A step keeping the text after the first `key` (case-insensitive, then `:`/`=` and spaces);
    no `key` -> invalid. S3 reads base-model answers after their "Label" key: `after:Label`."""
    rx = re.compile(re.escape(key) + r"\s*[:=]?\s*", re.I)

    def step(cands: list[str], idx: LabelIndex) -> list[str]:
        out = []
        for c in cands:
            m = rx.search(c)
            out.append(c[m.end():] if m else INVALID)
        return out

    return step


def _first_name(text: str, idx: LabelIndex) -> str | None:
    m = idx.name_re.search(" ".join(text.lower().split()))
    return idx.by_norm[m.group(1)] if m else None


def step_take_first(cands: list[str], idx: LabelIndex) -> list[str]:
    return cands[:1]


def step_first_line(cands: list[str], idx: LabelIndex) -> list[str]:
    return [c.strip().splitlines()[0] if c.strip() else "" for c in cands]


def step_lower(cands: list[str], idx: LabelIndex) -> list[str]:
    return [c.lower() for c in cands]


STEPS: dict[str, Step] = {
    "strip": step_strip,
    "lower": step_lower,
    "first_line": step_first_line,
    "number_or_label": step_number_or_label,
    "label": step_label,
    "option_letter": step_option_letter,
    "take_first": step_take_first,
}


def _resolve(step: str) -> Step:
    """A step name, `after:<key>`, or `regex:<pattern>` / `regex:<group>:<pattern>` (group 1 by default)."""
    if step.startswith("after:"):
        return step_after(step[len("after:"):])
    if step.startswith("regex:"):
        rest = step[len("regex:"):]
        group, sep, pattern = rest.partition(":")
        if sep and (group.isascii() and group.isdigit()):
            return step_regex(pattern, int(group))
        return step_regex(rest)
    if step not in STEPS:
        raise ValueError(f"unknown extraction step {step!r}; known: {sorted(STEPS)} or regex:<pattern>")
    return STEPS[step]


def make_extractor(labels: Sequence[str], steps: Sequence[str] = ("strip", "number_or_label", "take_first"),
                   synonyms: dict[str, str] | None = None) -> Callable[[str], str]:
    idx = LabelIndex(labels, synonyms)
    fns = [_resolve(s) for s in steps]
    label_set = set(labels)

    def extract(text: str) -> str:
        cands = [text or ""]
        for fn in fns:
            cands = fn(cands, idx)
        for c in cands:
            if c in label_set:
                return c
        return INVALID

    return extract
