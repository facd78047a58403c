"""NER as generation: IOB2 tags <-> a text target listing typed spans, and its exact inverse.

Target format, one entity per line in sentence order, `none` when there is none:

    protein: glucocorticoid receptors
    cell_type: lymphocytes

The inverse maps each (type, span text) back onto the sentence tokens, left to right, taking
the first untagged occurrence after the previous entity. When that would be the wrong place (the
same words occur earlier outside any entity), the line ends with ` #k`: the k-th such
occurrence. So IOB2 -> target -> IOB2 is exact for well-formed IOB2. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

NONE = "none"


@dataclass(frozen=True)
class Span:
    type: str
    start: int  # token index
    end: int  # exclusive


def tags_to_spans(tags: Sequence[str]) -> list[Span]:
    """Entities of an IOB2 sequence; an I- that does not continue its type starts a new entity
    (the lenient reading of seqeval's default `get_entities`)."""
    spans: list[Span] = []
    start, typ = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and typ == t
        if start is not None and not continues:
            spans.append(Span(typ, start, i))
            start, typ = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, typ = i, t
    return spans


OCCURRENCE = re.compile(r"^(.*) #(\d+)$")


def spans_to_text(tokens: Sequence[str], spans: Sequence[Span]) -> str:
    """Target lines; the occurrence marker is computed by running the inverse's own search."""
    if not spans:
        return NONE
    tags = ["O"] * len(tokens)
    cursor = 0
    lines = []
    for s in sorted(spans, key=lambda x: x.start):
        words = list(tokens[s.start:s.end])
        k = 1
        pos = _find(tokens, words, cursor, tags)
        while pos is not None and pos != s.start:
            k += 1
            pos = _find(tokens, words, pos + 1, tags)
        line = f"{s.type}: {' '.join(words)}"
        lines.append(line if k == 1 else f"{line} #{k}")
        tags[s.start] = f"B-{s.type}"
        for j in range(s.start + 1, s.end):
            tags[j] = f"I-{s.type}"
        cursor = s.end
    return "\n".join(lines)


def target_for_tags(tokens: Sequence[str], tags: Sequence[str]) -> str:
    return spans_to_text(tokens, tags_to_spans(tags))


@dataclass
class Parsed:
    entities: list[tuple[str, str]]  # (type, span text)
    valid: bool


def parse_entities(text: str, types: Sequence[str]) -> Parsed:
    """`type: span` lines -> entities. Any non-empty line that does not parse makes the output invalid."""
    by_lower = {t.lower(): t for t in types}
    text = (text or "").strip()
    if text.lower().strip(" .") == NONE:
        return Parsed([], True)
    if not text:
        return Parsed([], False)
    out = []
    for line in text.splitlines():
        line = line.strip().lstrip("-*• ").strip()
        if not line:
            continue
        typ, sep, span = line.partition(":")
        typ = by_lower.get(typ.strip().lower())
        if not sep or typ is None or not span.strip():
            return Parsed([], False)
        out.append((typ, " ".join(span.split())))
    return Parsed(out, True)


def entities_to_tags(tokens: Sequence[str], entities: Sequence[tuple[str, str]]) -> tuple[list[str], int]:
    """Place entities on the tokens left to right; return (IOB2 tags, number of spans not found).

    Each span is searched from the end of the previous one, then anywhere still untagged.
    """
    tags = ["O"] * len(tokens)
    cursor, missing = 0, 0
    for typ, text in entities:
        m = OCCURRENCE.match(text)
        k = int(m.group(2)) if m else 1
        words = (m.group(1) if m else text).split(" ")
        n = len(words)
        pos = _find(tokens, words, cursor, tags)
        for _ in range(k - 1):
            if pos is None:
                break
            pos = _find(tokens, words, pos + 1, tags)
        if pos is None:
            pos = _find(tokens, words, 0, tags)
        if pos is None:
            missing += 1
            continue
        tags[pos] = f"B-{typ}"
        for j in range(pos + 1, pos + n):
            tags[j] = f"I-{typ}"
        cursor = pos + n
    return tags, missing


def _find(tokens: Sequence[str], words: list[str], start: int, tags: list[str]) -> int | None:
    n = len(words)
    for i in range(start, len(tokens) - n + 1):
        if list(tokens[i:i + n]) == words and all(t == "O" for t in tags[i:i + n]):
            return i
    return None
