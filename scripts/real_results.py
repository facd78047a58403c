#!/usr/bin/env python
"""The real-model results table (README), rebuilt from the committed per-item results in results/real/.

    python scripts/real_results.py                    # the table, every figure recomputed from the items
    python scripts/real_results.py --export           # finished studies in runs/study-<name>/ -> results/real/
    python scripts/real_results.py --export --studies agnews_smollm2 --shared   # the cores were shared
    python scripts/real_results.py --export --studies agnews_smollm2 --merge    # add this session's trials
    python scripts/real_results.py --readme           # write the table into README.md between its markers

Every row's accuracy / macro-F1 / entity F1 and its 95% CI are recomputed from `items.jsonl` with
ftk's metric functions and must equal the recorded metrics.json (the script stops otherwise); the
paired McNemar tests against the strongest base row and the strongest baseline (Holm within each
study) are recomputed from the items' correctness. tests/test_real_results.py checks that the README
holds exactly this table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "real"
# The table's order: S0, S2, S3 (NER), S3 (prompt tuning), then any other published study.
ORDER = ["agnews_smollm2", "disaster_smollm2", "bionlp_smollm2", "fpb_smollm2_epochs"]
# The seed experiments' own figures (shared/docs/SEEDS.md), beside ours for scale only.
SEED_FIGURES = {
    "agnews_smollm2": "S0 Llama-3.1-8B full SFT, 120k rows: 0.9543",
    "disaster_smollm2": "S2 Llama-3-8B head LoRA, 30 epochs: 0.4366 -> 0.7932",
    "bionlp_smollm2": "S3 GPT-Neo-1.3B token LoRA: entity F1 ~0.54 -> 0.57",
    "fpb_smollm2_epochs": "S3 GPT-Neo-1.3B PT: 0.647 / 0.832 / 0.736 at 1 / 5 / 10 epochs",
    "yelp_smollm2": "S1 ChatGLM3-6B LoRA: micro-F1 0.406 -> 0.695",
}
BEGIN, END = "<!-- real-results:begin -->", "<!-- real-results:end -->"
HEADER = ("| study | row | accuracy [95% CI] | macro-F1 [95% CI] | entity F1 [95% CI] | invalid | "
          "vs strongest base: delta, McNemar p (Holm) | vs strongest baseline: delta, p (Holm) | train s | n |")


def _ci(fig: dict, key: str) -> str:
    if key not in fig:
        return ""
    lo, hi = fig["ci95"].get(key, (None, None))
    return f"{fig[key]:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def _test(t: dict | None) -> str:
    return "" if not t else f"{t['delta']:+.4f}, p {t['p_holm']:.2g}"


def _row_name(r: dict) -> str:
    if r["kind"] == "trial":
        varied = {k: v for k, v in r["varied"].items()}
        return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in varied.items()) or "tuned"
    return r["what"]


def table(studies: list[dict]) -> str:
    lines = [HEADER, "|---|---|---|---|---|---:|---|---|---:|---:|"]
    for s in studies:
        first = True
        seeds = {g["last"]: g for g in s["seeds"]}
        for r in s["rows"]:
            fig = r["fig"]
            ner = "gold_tags" in fig or "token_accuracy" in fig
            acc = f"tokens {fig['token_accuracy']:.4f}" if ner else _ci(fig, "accuracy")
            train = r["provenance"].get("train_seconds")
            name = s["study"] if first else ""
            mark = " **(strongest base)**" if s["strongest"]["base"] == r["trial"] else \
                " **(strongest baseline)**" if s["strongest"]["baseline"] == r["trial"] else ""
            lines.append(f"| {name} | {_row_name(r)}{mark} | {acc} | {_ci(fig, 'macro_f1') if not ner else ''} | "
                         f"{_ci(fig, 'f1') if ner else ''} | {fig['invalid_rate']:.1%} | {_test(r.get('vs_base'))} | "
                         f"{_test(r.get('vs_baseline'))} | {'' if train is None else f'{train:.0f}' + (' (shared)' if r.get('contended', s.get('contended')) else '')} | {fig['n']} |")
            first = False
            g = seeds.get(r["trial"])
            if g:
                each = ", ".join(f"{v:.4f}" for v in g["values"])
                lines.append(f"| | {s['headline']} over seeds {', '.join(map(str, g['seeds']))}: mean +- sd | "
                             f"**{g['mean']:.4f} +- {g['sd']:.4f}** ({each}) | | | | | | | |")
    return "\n".join(lines)


def rebuild_all(root: Path) -> list[dict]:
    from ftk.study.results import STUDY_FILE, rebuild_study

    folders = [p.parent for p in root.glob(f"*/{STUDY_FILE}")]
    folders.sort(key=lambda p: (ORDER.index(p.name) if p.name in ORDER else len(ORDER), p.name))
    return [rebuild_study(f) for f in folders]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(RESULTS), help="the published results folder")
    ap.add_argument("--export", action="store_true", help="copy finished studies from --runs into --root")
    ap.add_argument("--runs", default=str(REPO / "runs"), help="folder holding the study-<name>/ folders")
    ap.add_argument("--studies", default="", help="with --export: comma-separated study names (default: all)")
    ap.add_argument("--shared", action="store_true", help="with --export: other work shared the machine's "
                    "cores while the studies ran (their times are upper bounds)")
    ap.add_argument("--note", default="", help="with --export: a sentence stored with the results")
    ap.add_argument("--readme", action="store_true", help="write the table into README.md between the "
                    f"{BEGIN} / {END} markers")
    ap.add_argument("--merge", action="store_true", help="with --export: keep the published rows of a study that "
                    "this runs folder does not hold (trials run in an earlier session)")
    args = ap.parse_args()
    root = Path(args.root)
    from ftk.errors import FtkError

    try:
        if args.export:
            from ftk.study.results import export_study

            names = [n for n in args.studies.split(",") if n] or [
                yaml.safe_load(p.read_text())["name"] for p in sorted((REPO / "studies" / "real").glob("*.yaml"))]
            for name in names:
                sdir = Path(args.runs) / f"study-{name}"
                if (sdir / "trials").is_dir() and any((sdir / "trials").glob("*.json")):
                    dest = export_study(sdir, root, contended=args.shared, note=args.note, merge=args.merge)
                    print(f"exported: {dest}")
            return 0
        studies = rebuild_all(root)
    except FtkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = table(studies)
    if any(s.get("contended") for s in studies):
        text += "\n\n(shared): other work shared the CPU cores while the row ran: its train seconds are an upper bound."
    if args.readme:
        readme = REPO / "README.md"
        body = readme.read_text(encoding="utf-8")
        if body.count(BEGIN) != 1 or body.count(END) != 1:
            print(f"error: {readme}: expected one {BEGIN} and one {END} marker", file=sys.stderr)
            return 2
        head, rest = body.split(BEGIN)
        readme.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1], encoding="utf-8")
        print(f"written between the markers: {readme}")
        return 0
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
