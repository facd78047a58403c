#!/usr/bin/env python
"""The real-model results table (README): every study in studies/real that has finished trials, base vs
each fine-tuned row, with 95% CIs, McNemar p against the base row (Holm), invalid rate, train time,
eval throughput, and the seed's own figure for reference (a different, larger model: not comparable).

    python scripts/real_results.py                  # reads runs/study-<name>/ for each studies/real/*.yaml
    python scripts/real_results.py --root /scratch/runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# The seed experiments' own figures (shared/docs/SEEDS.md), beside ours for scale only.
SEED_FIGURES = {
    "agnews_smollm2": "S0 Llama-3.1-8B full SFT, 120k rows: accuracy 0.9543",
    "disaster_smollm2": "S2 Llama-3-8B head LoRA, 30 epochs: accuracy 0.4366 -> 0.7932",
    "bionlp_smollm2": "S3 GPT-Neo-1.3B token LoRA, 10 epochs: entity F1 ~0.54 -> 0.57",
    "fpb_smollm2_epochs": "S3 GPT-Neo-1.3B prompt tuning: accuracy 0.647 / 0.832 / 0.736 at 1 / 5 / 10 epochs",
    "yelp_smollm2": "S1 ChatGLM3-6B LoRA: micro-F1 0.406 -> 0.695, macro-F1 0.183 -> 0.579",
}


def fmt_ci(m: dict, key: str) -> str:
    if key not in m:
        return "-"
    lo, hi = m.get("ci95", {}).get(key, [None, None])
    return f"{m[key]:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(REPO / "runs"), help="folder holding the study-<name>/ folders")
    args = ap.parse_args()

    from ftk.study.report import study_report

    print("| task (study) | row | accuracy [95% CI] | macro-F1 [95% CI] | entity F1 | invalid | McNemar p vs base "
          "| train s | eval ex/s | n | seed's figure (other model) |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---|")
    for spec_path in sorted((REPO / "studies" / "real").glob("*.yaml")):
        name = yaml.safe_load(spec_path.read_text())["name"]
        sdir = Path(args.root) / f"study-{name}"
        if not (sdir / "trials").is_dir() or not list((sdir / "trials").glob("*.json")):
            continue
        rep = study_report(sdir)  # rebuilt from the finished trials (a study may be partly run)
        for r in rep["rows"]:
            m = json.loads(Path(r["eval_dir"], "metrics.json").read_text())  # trial folders resolved from here
            row = ("base (untrained head)" if m.get("mode") == "head" else "base (zero-shot)") if r["base"] else (", ".join(f"{k}={v}" for k, v in r["varied"].items()) or "tuned")
            p = (r.get("vs_base") or {}).get("mcnemar_p_holm")
            ner = m.get("kind") == "ner"
            ent = fmt_ci(m, "f1") if ner else "-"
            acc = f"{m['token_accuracy']:.4f} (tokens)" if ner else fmt_ci(m, "accuracy")
            train = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "-"
            eps = f"{r['eval_examples_per_s']:.2f}" if r.get("eval_examples_per_s") else "-"
            print(f"| {m['task']} ({name}) | {row} | {acc} | {fmt_ci(m, 'macro_f1')} | {ent} | "
                  f"{m.get('invalid_rate', 0):.2%} | {'-' if p is None else format(p, '.2g')} | {train} | {eps} | "
                  f"{m['n']} | {SEED_FIGURES.get(name, '')} |")


if __name__ == "__main__":
    main()
