#!/usr/bin/env python
"""Time ftk's classification metrics on N predictions next to scikit-learn's classification_report.

ftk computes accuracy, per-class P/R/F1/support, micro/macro/weighted F1, MCC, the invalid rate and
the confusion matrix; classification_report computes per-class P/R/F1/support plus averages.
Target (issue 4): ftk's total <= 2x classification_report on the same arrays.

    python scripts/bench_metrics.py --n 1000000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import classification_report

from ftk.eval.extract import INVALID
from ftk.eval.metrics import classification_metrics

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
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
    print(f"n = {args.n:,} predictions, best of {args.repeat}")
    print(f"ftk classification_metrics        {t_ftk:8.3f} s  ({args.n / t_ftk:,.0f} predictions/s)")
    print(f"sklearn classification_report     {t_skl:8.3f} s  ({args.n / t_skl:,.0f} predictions/s)")
    print(f"ratio ftk / sklearn               {t_ftk / t_skl:8.3f}  (target <= 2.0)")
    print(f"macro F1 agrees with sklearn      {agree}")


if __name__ == "__main__":
    main()
