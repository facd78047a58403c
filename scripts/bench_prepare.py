#!/usr/bin/env python
"""Prepare throughput on a large CSV next to a plain read-and-write of the same rows.

Builds a CSV by replicating the real Yelp sample (../shared/realdata/yelp_review_full) to
--rows rows (each copy's text gets a " #k" suffix so de-duplication keeps every row), then times
  - plain: csv.reader over the file, one json.dumps per row to a JSONL file (the floor), and
  - ftk prepare: read, validate, clean (duplicates), prompt, write, hash, manifest.

    python scripts/bench_prepare.py --rows 500000
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

from ftk.data.prepare import prepare
from ftk.data.task import load_task

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "realdata" / "yelp_review_full" / "hf_train_sample1000_full_dataset.csv"


def build_csv(path: Path, rows: int) -> None:
    with open(SAMPLE, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        base = [(r["label"], r["text"]) for r in reader]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "text", "id"])
        for i in range(rows):
            label, text = base[i % len(base)]
            w.writerow([label, f"{text} #{i // len(base)}", i])


def plain(src: Path, dst: Path) -> int:
    n = 0
    with open(src, newline="", encoding="utf-8") as fh, open(dst, "w", encoding="utf-8") as out:
        reader = csv.reader(fh)
        next(reader)
        for label, text, rid in reader:
            out.write(json.dumps({"id": rid, "input": text, "output": label}, ensure_ascii=False) + "\n")
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=500_000)
    args = ap.parse_args()
    if not SAMPLE.exists():
        raise SystemExit(f"real Yelp sample not found: {SAMPLE}")
    tmp = Path(tempfile.mkdtemp(prefix="ftk-bench-prepare-"))
    try:
        src = tmp / "yelp_big.csv"
        t0 = time.perf_counter()
        build_csv(src, args.rows)
        print(f"built {src.name}: {args.rows:,} rows, {src.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        n_plain = plain(src, tmp / "plain.jsonl")
        t_plain = time.perf_counter() - t0

        t0 = time.perf_counter()
        m = prepare(load_task("yelp_review_full"), {"train": str(src)}, tmp / "prepared", source_format="hf_csv")
        t_ftk = time.perf_counter() - t0
        n_ftk = m["splits"]["train"]["rows"]

        print(f"plain read+write   {n_plain:>9,} rows  {t_plain:7.2f} s  {n_plain / t_plain:>10,.0f} rows/s")
        print(f"ftk prepare        {n_ftk:>9,} rows  {t_ftk:7.2f} s  {n_ftk / t_ftk:>10,.0f} rows/s")
        print(f"ratio ftk / plain time: {t_ftk / t_plain:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
