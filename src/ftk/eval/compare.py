"""`ftk compare A B`: two evaluations of the same test items side by side, with paired tests.

McNemar's test on per-item correctness (exact binomial when there are fewer than 25 discordant
items, chi-square with continuity correction otherwise) and a paired bootstrap of accuracy and macro F1
(or of the per-item score for other task kinds), with p = (k + 1) / (B + 1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ftk.data.task import load_task
from ftk.errors import FtkError
from ftk.eval.extract import make_extractor
from ftk.eval.metrics import classification_metrics, label_codes, macro_f1_from_codes
from ftk.eval.predictions import read_done
from ftk.fileio import iter_jsonl

HEADLINE = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "mcc", "invalid_rate")


def find_eval_dir(path: str | Path) -> Path:
    """An eval folder (has metrics.json) or a run folder holding exactly one eval-* folder."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        return path
    evals = sorted(p for p in path.glob("eval-*") if (p / "metrics.json").is_file())
    if len(evals) == 1:
        return evals[0]
    if path / "eval-test" in evals:  # the run's own evaluation, beside checkpoint or choice-mode ones
        print(f"[ftk] {path}: {len(evals)} evaluations; comparing eval-test (name another folder to choose)",
              file=sys.stderr, flush=True)
        return path / "eval-test"
    if not evals:
        raise FtkError("no metrics.json here nor in an eval-* folder (run `ftk eval` first)", path=path)
    raise FtkError(f"several evaluations ({', '.join(p.name for p in evals)}); name one", path=path)


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    from scipy.stats import binomtest, chi2

    b = int(np.sum(a_correct & ~b_correct))  # A right, B wrong
    c = int(np.sum(~a_correct & b_correct))  # A wrong, B right
    if b + c == 0:
        p = 1.0
        method = "none (no discordant items)"
    elif b + c < 25:
        p = float(binomtest(b, b + c, 0.5).pvalue)
        method = "exact binomial"
    else:
        stat = (abs(b - c) - 1) ** 2 / (b + c)
        p = float(chi2.sf(stat, 1))
        method = "chi-square, continuity corrected"
    return {"a_only_correct": b, "b_only_correct": c, "p_value": p, "method": method}


N_BOOT = 1000


def bootstrap_p(deltas: np.ndarray) -> float:
    """Two-sided p of a paired bootstrap, (k + 1) / (B + 1) with k the resamples on the far side of 0
    (never exactly 0: with B resamples nothing below 1 / (B + 1) can be claimed)."""
    k = min(int((deltas <= 0).sum()), int((deltas >= 0).sum()))
    return float(min(1.0, 2 * (k + 1) / (len(deltas) + 1)))


def _summary(observed: float, deltas: np.ndarray) -> dict:
    lo, hi = np.quantile(deltas, [0.025, 0.975])
    return {"delta": float(observed), "ci95": [float(lo), float(hi)], "p_value": bootstrap_p(deltas),
            "n_boot": len(deltas)}


def paired_bootstrap(gold, pred_a, pred_b, labels, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, dict]:
    """B - A for macro F1 and for accuracy over the same resampled items (percentile CI, p as
    `bootstrap_p`), so a report tests the very metric it shows."""
    k = len(labels)
    codes_a = label_codes(gold, pred_a, labels)
    codes_b = label_codes(gold, pred_b, labels)
    ok_a, ok_b = (c // (k + 1) == c % (k + 1) for c in (codes_a, codes_b))
    rng = np.random.default_rng(seed)
    n = len(codes_a)
    d_f1, d_acc = np.empty(n_boot), np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        d_f1[i] = macro_f1_from_codes(codes_b[idx], k) - macro_f1_from_codes(codes_a[idx], k)
        d_acc[i] = ok_b[idx].mean() - ok_a[idx].mean()
    return {"macro_f1": _summary(macro_f1_from_codes(codes_b, k) - macro_f1_from_codes(codes_a, k), d_f1),
            "accuracy": _summary(ok_b.mean() - ok_a.mean(), d_acc)}


def _read_scores(d: Path) -> dict[str, dict]:
    path = d / "scores.jsonl"
    if not path.exists():
        raise FtkError("no scores.jsonl (evaluate again with this ftk version)", path=d)
    out: dict[str, dict] = {}
    for lineno, row, problem in iter_jsonl(path, errors="replace"):
        if problem or "id" not in row or "correct" not in row:
            raise FtkError(problem or "expected `id` and `correct` on every row (damaged or edited by hand)",
                           path=path, where=str(lineno))
        out[row["id"]] = row
    return out


def _numeric(m: dict) -> dict[str, float]:
    out = {k: float(v) for k, v in m.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("n", "shards")}
    out.update({f"{k} (rows)": float(v) for k, v in m.get("per_metric", {}).items()})
    return out


def same_gold(pa: dict[str, dict], pb: dict[str, dict], ids: list[str], where: Path) -> None:
    """Two evaluations pair item by item only when each id holds the same gold answer in both: the same
    ids over different test data (ids are per split and position) must not be compared."""
    differ = [i for i in ids if json.dumps(pa[i].get("label"), sort_keys=True) != json.dumps(pb[i].get("label"),
                                                                                           sort_keys=True)]
    if differ:
        raise FtkError(f"the two evaluations hold different gold answers for {len(differ)} of {len(ids)} items "
                       f"(first: {differ[0]}): they are not of the same test data", path=where)


def compare_generic(da: Path, db: Path, ma: dict, mb: dict) -> dict:
    """Any task kind: headline numbers side by side, McNemar on per-item correctness, and a
    paired bootstrap on the per-item score (or correctness)."""
    sa, sb = _read_scores(da), _read_scores(db)
    if set(sa) != set(sb):
        raise FtkError(f"the two evaluations cover different items ({len(sa)} vs {len(sb)} ids)", path=db)
    ids = sorted(sa)
    same_gold(read_done(da / "predictions.jsonl"), read_done(db / "predictions.jsonl"), ids, db)
    ca = np.array([sa[i]["correct"] for i in ids])
    cb = np.array([sb[i]["correct"] for i in ids])
    va = np.array([sa[i].get("score") if sa[i].get("score") is not None else float(sa[i]["correct"]) for i in ids])
    vb = np.array([sb[i].get("score") if sb[i].get("score") is not None else float(sb[i]["correct"]) for i in ids])
    rng = np.random.default_rng(0)
    deltas = np.array([(vb[idx] - va[idx]).mean() for idx in (rng.integers(0, len(ids), len(ids)) for _ in range(N_BOOT))])
    na, nb = _numeric(ma), _numeric(mb)
    return {
        "a": str(da), "b": str(db), "task": ma.get("task"), "n": len(ids),
        "metrics": {k: {"a": na[k], "b": nb[k], "delta": nb[k] - na[k]} for k in na if k in nb},
        "per_class_f1": {},
        "mcnemar": mcnemar(ca, cb),
        "paired_bootstrap_item_score": _summary(vb.mean() - va.mean(), deltas),
    }


def _metrics(d: Path) -> dict:
    try:
        m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FtkError(f"not valid JSON ({exc})", path=d / "metrics.json") from None
    if not isinstance(m, dict) or "task" not in m:
        raise FtkError("not an ftk metrics.json (no task)", path=d / "metrics.json")
    return m


def eval_task(d: Path, metrics: dict):
    """The task an evaluation was scored with: its own copy (task.yaml), else the built-in by name."""
    copy = d / "task.yaml"
    return load_task(copy) if copy.is_file() else load_task(metrics["task"])


def compare(path_a: str | Path, path_b: str | Path) -> dict:
    da, db = find_eval_dir(path_a), find_eval_dir(path_b)
    ma, mb = _metrics(da), _metrics(db)
    if ma.get("task") != mb.get("task"):
        raise FtkError(f"different tasks: {ma.get('task')} vs {mb.get('task')}", path=db)
    if ma.get("kind", "classification") not in ("classification", "pair_classification"):
        return compare_generic(da, db, ma, mb)
    task = eval_task(da, ma)
    pa, pb = read_done(da / "predictions.jsonl"), read_done(db / "predictions.jsonl")
    if set(pa) != set(pb):
        raise FtkError(f"the two evaluations cover different items ({len(pa)} vs {len(pb)} ids, "
                       f"{len(set(pa) ^ set(pb))} not shared)", path=db)
    ids = sorted(pa)
    same_gold(pa, pb, ids, db)
    ex_a, ex_b = (task.extraction_for(bool(m.get("base"))) for m in (ma, mb))
    extract_a = make_extractor(task.labels, ex_a.steps, ex_a.synonyms)
    extract_b = make_extractor(task.labels, ex_b.steps, ex_b.synonyms)
    gold = [pa[i]["label"] for i in ids]
    pred_a = [extract_a(pa[i]["predict"]) for i in ids]
    pred_b = [extract_b(pb[i]["predict"]) for i in ids]
    a = classification_metrics(gold, pred_a, task.labels)
    b = classification_metrics(gold, pred_b, task.labels)
    ca = np.array([x == y for x, y in zip(gold, pred_a)])
    cb = np.array([x == y for x, y in zip(gold, pred_b)])
    return {
        "a": str(da), "b": str(db), "task": task.name, "n": len(ids),
        "metrics": {k: {"a": a[k], "b": b[k], "delta": b[k] - a[k]} for k in HEADLINE},
        "per_class_f1": {lab: {"a": a["per_class"][lab]["f1"], "b": b["per_class"][lab]["f1"],
                               "delta": b["per_class"][lab]["f1"] - a["per_class"][lab]["f1"]}
                         for lab in task.labels},
        "mcnemar": mcnemar(ca, cb),
        **{f"paired_bootstrap_{k}": v for k, v in paired_bootstrap(gold, pred_a, pred_b, task.labels).items()},
    }


def compare_markdown(c: dict) -> str:
    lines = [f"# {c['task']}: A vs B (n = {c['n']} shared items)", "",
             f"- A: `{c['a']}`", f"- B: `{c['b']}`", "",
             "| metric | A | B | B - A |", "|---|---:|---:|---:|"]
    for k, v in {**c["metrics"], **{f"F1 {lab}": v for lab, v in c["per_class_f1"].items()}}.items():
        lines.append(f"| {k} | {v['a']:.4f} | {v['b']:.4f} | {v['delta']:+.4f} |")
    m = c["mcnemar"]
    lines += ["", f"McNemar (per-item correctness): A-only correct {m['a_only_correct']}, B-only correct "
                  f"{m['b_only_correct']}, p = {m['p_value']:.4g} ({m['method']})"]
    for key, what in (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("item_score", "mean item score")):
        if bs := c.get(f"paired_bootstrap_{key}"):
            lines.append(f"Paired bootstrap ({what}, B = {bs['n_boot']} resamples, p = (k+1)/(B+1)): delta "
                         f"{bs['delta']:+.4f}, 95% CI [{bs['ci95'][0]:+.4f}, {bs['ci95'][1]:+.4f}], "
                         f"p = {bs['p_value']:.4g}")
    return "\n".join(lines) + "\n"
