#!/usr/bin/env python
"""Time ftk's classification metrics on N predictions next to scikit-learn's classification_report.

ftk computes accuracy, per-class P/R/F1/support, micro/macro/weighted F1, MCC, the invalid rate and
the confusion matrix; classification_report computes per-class P/R/F1/support plus averages.
Target (issue 4): ftk's total <= 2x classification_report on the same arrays.
Then a task with --many-labels labels (issue 32: 10,000 labels took 34-50 s, most of it a bootstrap that
built a labels x labels matrix per resample): the metrics and the macro-F1 bootstrap CI, with macro F1
checked against scikit-learn.

    python scripts/bench_metrics.py --n 1000000 --many-labels 10000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import classification_report

from ftk.eval.extract import INVALID
from ftk.eval.metrics import classification_ci, classification_metrics

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine() -> str:
    """CPU model, the SIMD flags that matter for speed, cores and load: figures differ between machines."""
    import os

    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags] or ["none"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}; {os.cpu_count()} cores; flags {' '.join(simd)}; load {load}"


def many_labels(k: int, n: int, seed: int) -> None:
    from sklearn.metrics import f1_score

    labels = [f"label{i:05d}" for i in range(k)]
    rng = np.random.default_rng(seed)
    gold = [labels[i] for i in rng.integers(0, k, n)]
    pred = [g if rng.random() < 0.6 else labels[int(rng.integers(0, k))] for g in gold]
    t0 = time.perf_counter()
    m = classification_metrics(gold, pred, labels)
    t1 = time.perf_counter()
    lo, hi = classification_ci(gold, pred, labels, "macro_f1")
    t2 = time.perf_counter()
    ref = f1_score(gold, pred, labels=labels, average="macro", zero_division=0)
    print(f"{k:,} labels, {n:,} predictions")
    print(f"ftk classification_metrics        {t1 - t0:8.3f} s")
    print(f"macro-F1 bootstrap CI (B = 1000)  {t2 - t1:8.3f} s  [{lo:.4f}, {hi:.4f}]")
    print(f"macro F1 agrees with sklearn      {abs(m['macro_f1'] - ref) < 1e-9}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--many-labels", type=int, default=10_000, help="labels of the second table (0: skip it)")
    ap.add_argument("--many-labels-n", type=int, default=2_000, help="predictions of the second table")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    gold = rng.choice(LABELS, args.n).tolist()
    noise = rng.random(args.n)
    other = rng.choice(LABELS + [INVALID], args.n).tolist()
    pred = [g if r < 0.9 else o for g, r, o in zip(gold, noise, other)]

    t_ftk = best_of(lambda: classification_metrics(gold, pred, LABELS), args.repeat)
    t_skl = best_of(lambda: classification_report(gold, pred, labels=LABELS, output_dict=True, zero_division=0),
                    args.repeat)
    ours = classification_metrics(gold, pred, LABELS)
    ref = classification_report(gold, pred, labels=LABELS, output_dict=True, zero_division=0)
    agree = abs(ours["macro_f1"] - ref["macro avg"]["f1-score"]) < 1e-9
    print(f"machine: {machine()}")
    print(f"n = {args.n:,} predictions, best of {args.repeat}")
    print(f"ftk classification_metrics        {t_ftk:8.3f} s  ({args.n / t_ftk:,.0f} predictions/s)")
    print(f"sklearn classification_report     {t_skl:8.3f} s  ({args.n / t_skl:,.0f} predictions/s)")
    print(f"ratio ftk / sklearn               {t_ftk / t_skl:8.3f}  (target <= 2.0)")
    print(f"macro F1 agrees with sklearn      {agree}")
    if args.many_labels:
        print()
        many_labels(args.many_labels, args.many_labels_n, args.seed)


if __name__ == "__main__":
    main()
