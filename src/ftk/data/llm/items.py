"""Answers -> items -> rows of the task's raw format, validated by the very rules prepare applies
(data/rows.py), cleaned (exact and ROUGE-L near duplicates against each other, the seeds and the
leakage files: data/cleaning.py), and written in the raw format so `ftk prepare` reads them as any
source. Every rejected item is kept with its reason."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field

from ftk.data.cleaning import drop_duplicates, drop_near_against, drop_near_duplicates, norm_text
from ftk.data.rows import Collector, Example, ReadResult


@dataclass
class Items:
    kept: list[tuple[Example, dict]] = field(default_factory=list)  # (example, raw columns)
    rejects: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def raw_label(task, fmt: str, label: str) -> str:
    """The raw value a label is written as in this format (label_map's key, else the name)."""
    spec = task.sources[fmt]
    for raw, name in (spec.label_map or {}).items():
        if name == label:
            return raw
    return label


def parse_answer(ld, cached: dict) -> Items:
    """One cached answer: split into items, each matched, filled and validated as a raw row."""
    spec, task = ld.spec, ld.task
    rx = re.compile(spec.item, re.S)
    out = Items()
    label = cached["label"]
    fixed = {k: v.format(label=label, label_raw=raw_label(task, ld.fmt, label)) for k, v in spec.fields.items()}
    pieces = [p.strip() for p in (cached.get("text") or "").split(spec.split)]
    pieces = [p for p in pieces if p]
    if cached.get("finish_reason") == "length" and pieces:  # cut off by max_tokens: its last item is partial
        out.counts["items"] += 1  # parsed and rejected, so parsed == valid + rejected still holds
        out.counts["cut_by_max_tokens"] += 1
        out.rejects.append({"request": cached["index"], "item": len(pieces) - 1, "text": pieces[-1][:2000],
                            "reason": "cut_by_max_tokens"})
        pieces.pop()
    if len(pieces) > spec.max_items_per_answer:  # counted, not read: an answer of 26,000 items is not data
        out.counts["over_max_items_per_answer"] += len(pieces) - spec.max_items_per_answer
        pieces = pieces[:spec.max_items_per_answer]
    for j, piece in enumerate(pieces):
        out.counts["items"] += 1
        ref = {"request": cached["index"], "item": j, "text": piece[:2000]}
        if len(piece) > spec.max_item_chars:
            out.rejects.append({**ref, "reason": "too_long", "detail": f"{len(piece):,} characters "
                                f"(max_item_chars {spec.max_item_chars:,})"})
            continue
        m = rx.search(piece)
        if not m:
            out.rejects.append({**ref, "reason": "no_match"})
            continue
        row = {k: (v or "").strip() for k, v in m.groupdict().items()} | fixed
        res = ReadResult(source="synthetic")
        Collector(task, task.sources[ld.fmt], res, strict=False, fmt=ld.fmt).row(row, "synthetic", cached["index"])
        if res.examples:
            out.kept.append((res.examples[0], row))
        else:
            problem = (res.malformed or res.empty)[0]
            out.rejects.append({**ref, "reason": problem.kind, "detail": problem.reason})
    return out


def clean(ld, items: list[tuple[Example, dict]]) -> tuple[list[tuple[Example, dict]], Counter]:
    """Exact and near duplicates among the items, then against the seeds and the leakage files."""
    counts: Counter = Counter()
    by_id = {id(ex): row for ex, row in items}
    examples, dup = drop_duplicates([ex for ex, _ in items])
    counts.update(dup)
    held = {norm_text(ex.input) for ex in ld.seeds} | {norm_text(ex.input) for ex in ld.leakage}
    before = len(examples)
    examples = [ex for ex in examples if norm_text(ex.input) not in held]
    counts["exact_overlap_with_seeds_or_leakage"] = before - len(examples)
    thr = ld.spec.near_duplicate_rouge_l
    if thr is not None:
        from ftk.progress import CountScreen  # the same progress line as eval's and training's

        with CountScreen("cleaning: near duplicates", len(examples), unit="items") as bar:
            examples, near = drop_near_duplicates(examples, thr, progress=bar.update)
        counts["near_duplicates"] = near
        with CountScreen("cleaning: overlap with seeds and leakage", len(examples), unit="items") as bar:
            examples, leak = drop_near_against(examples, list(ld.seeds) + list(ld.leakage), thr, progress=bar.update)
        counts["near_overlap_with_seeds_or_leakage"] = leak
    return [(ex, by_id[id(ex)]) for ex in examples], counts


def render(ld, rows: list[dict]) -> str:
    """The rows as a file of the task's raw format (what its reader reads back)."""
    spec = ld.task.sources[ld.fmt]
    if spec.reader in ("csv", "tsv"):
        from ftk.data.llm.spec import _columns

        cols = _columns(ld.task, ld.fmt)
        buf = io.StringIO()
        delim = spec.delimiter or ("\t" if spec.reader == "tsv" else ",")
        w = csv.writer(buf, delimiter=delim, quoting=csv.QUOTE_ALL if spec.quoting else csv.QUOTE_NONE,
                       lineterminator="\n", escapechar=None if spec.quoting else "\\")
        if spec.header:
            w.writerow(cols)
        for r in rows:
            w.writerow([r.get(c, "") for c in cols])
        return buf.getvalue()
    if spec.reader == "at_lines":
        return "".join(f"{r['text']}{spec.separator}{r['label']}\n" for r in rows)
    if spec.reader == "text":
        return "".join(f"{r['text']}\n" for r in rows)
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def unwritable(ld, row: dict) -> str | None:
    """Why the raw format cannot hold this row (None: it can). Control characters (NUL, ...) are
    refused in every format: a data file holding them is binary to `ftk prepare`."""
    if any(CONTROL.search(str(v)) for v in row.values()):
        return "control characters (NUL, ...) that no data file should hold"
    spec = ld.task.sources[ld.fmt]
    if spec.reader in ("csv", "tsv") and spec.quoting or spec.reader == "jsonl":
        return None
    breaks = ("\n", "\r", "\t") if spec.reader == "tsv" else ("\n", "\r")
    if any(b in str(v) for v in row.values() for b in breaks):
        return "a line break (or tab) the raw format cannot hold"
    return None
