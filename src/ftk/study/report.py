"""`ftk study report STUDY_DIR` (also at the end of `ftk study run`): one table of every trial,
the varied values, the headline metric with its 95% CI (Wilson for accuracy, else bootstrap), the invalid rate, the training
wall time, and paired tests (McNemar on per-item correctness, paired bootstrap on the metric) of
each trial against the best trial and against the base model, Holm-corrected within each family
(statsmodels). Written as report.md, report.csv and report.json, with a plot of the metric over
each varied axis (axis-<key>.png).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from ftk import plots
from ftk.errors import FtkError
from ftk.eval.compare import N_BOOT, compare
from ftk.eval.metrics import classification_metrics
from ftk.eval.report import ci_method, one_class
from ftk.fileio import read_json, write_json, write_text
from ftk.study.state import load_states

MCNEMAR = "McNemar on per-item correctness (exact binomial below 25 discordant items, else chi-square with " \
          "continuity correction)"


def _paired(a: dict, b: dict, metric: str) -> dict:
    """b against a: the paired bootstrap of `metric` itself where ftk has one (accuracy, macro F1),
    else of the mean per-item score, and McNemar on per-item correctness."""
    c = compare(a["eval_dir"], b["eval_dir"])
    key = f"paired_bootstrap_{metric}" if f"paired_bootstrap_{metric}" in c else "paired_bootstrap_item_score"
    boot = c[key]
    # delta is always the metric's own (b - a); the bootstrap says what it resampled (an entity F1 has
    # no per-item form, so its test is of the mean per-sentence score)
    return {"mcnemar_p": c["mcnemar"]["p_value"], "mcnemar_method": c["mcnemar"]["method"],
            "bootstrap_p": boot["p_value"], "n_boot": boot["n_boot"], "delta": b["value"] - a["value"],
            "bootstrap_delta": boot["delta"], "what": metric if key.endswith(metric) else "mean item score"}


def study_options(sdir: Path) -> tuple[str | None, str]:
    """The study's `metric` and Optuna direction, from the copy of the study file in its folder."""
    import yaml

    copy = sdir / "study.yaml"
    try:
        raw = yaml.safe_load(copy.read_text(encoding="utf-8")) if copy.is_file() else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raw = {}
    raw = raw if isinstance(raw, dict) else {}
    optuna = raw.get("optuna") if isinstance(raw.get("optuna"), dict) else {}
    direction = optuna.get("direction", "maximize") if raw.get("strategy") == "optuna" else "maximize"
    return raw.get("metric"), direction


def _holm(rows: list[dict], key: str) -> None:
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, r in enumerate(rows) if r.get(key) is not None]
    for test in ("mcnemar_p", "bootstrap_p"):
        pvals = [rows[i][key][test] for i in idx]
        if pvals:
            adjusted = multipletests(pvals, method="holm")[1]
            for i, p in zip(idx, adjusted):
                rows[i][key][test + "_holm"] = float(p)


def study_report(sdir: str | Path) -> dict:
    sdir = Path(sdir)
    states = load_states(sdir)
    metric, direction = study_options(sdir)
    rows, methods, trivial = [], set(), None
    for s in states:
        m = read_json(Path(s["eval_dir"], "metrics.json"), what="trial metrics", required=("headline",))
        if s.get("baseline") == "majority" and metric in (None, m["headline"]):
            trivial = {"value": m[m["headline"]], "what": str(m.get("what", "majority baseline")), "row": s["id"]}
        trivial = trivial or majority_baseline(m, metric or m["headline"])
        # a baseline has no training run; the others' run manifests give the training time
        run = {} if s.get("baseline") else read_json(Path(s["run_dir"], "manifest.json"), what="trial run manifest")
        head = metric or m["headline"]
        if head not in m:
            raise FtkError(f"the study's metric {head!r} is not in this evaluation (it has {m['headline']!r})",
                           path=Path(s["eval_dir"], "metrics.json"))
        lo, hi = m.get("ci95", {}).get(head, [None, None])
        methods.add(ci_method(m, head))
        rows.append({"trial": s["id"], "base": bool(s.get("base")), "baseline": s.get("baseline"),
                     "what": _what(s, m), "varied": s["varied"], "headline": head,
                     "value": m[head], "ci95": [lo, hi], "invalid_rate": m.get("invalid_rate"), "n": m.get("n"),
                     "train_seconds": run.get("train_seconds"), "eval_examples_per_s": m.get("examples_per_s"),
                     "one_class": one_class(m),
                     "run_dir": s["run_dir"], "eval_dir": s["eval_dir"]})
    head = rows[0]["headline"]
    trials = [r for r in rows if not (r["base"] or r["baseline"])]
    pick = max if direction == "maximize" else min
    strongest = lambda rs: pick(rs, key=lambda r: r["value"]) if rs else None  # ties: the first
    base = strongest([r for r in rows if r["base"]])  # every trial is tested against the strongest base row
    baseline = strongest([r for r in rows if r["baseline"]])  # ... and the strongest baseline
    best = strongest(trials)
    ties = [r["trial"] for r in trials if best and r["value"] == best["value"]]
    for r in rows:
        tuned = not (r["base"] or r["baseline"])
        r["vs_best"] = _paired(best, r, head) if best and r is not best and tuned else None
        r["vs_base"] = _paired(base, r, head) if base and tuned else None
        r["vs_baseline"] = _paired(baseline, r, head) if baseline and tuned else None
    for key in ("vs_best", "vs_base", "vs_baseline"):
        _holm(rows, key)
    axes = sorted({k for r in trials for k in r["varied"]})
    report = {"study": sdir.name, "study_dir": str(sdir), "headline": head, "direction": direction, "rows": rows,
              "best": best["trial"] if best else None, "tied_best": ties if len(ties) > 1 else [], "axes": axes,
              "strongest_base": base["trial"] if base else None,
              "strongest_baseline": baseline["trial"] if baseline else None,
              "seeds": seed_groups(trials), "trivial": trivial,
              "tests": {"mcnemar": MCNEMAR, "bootstrap": f"paired bootstrap of {head} (B = {N_BOOT}"
                        " resamples of the items, percentile 95% CI, two-sided p = (k+1)/(B+1)); Holm within each "
                        "column", "ci95": f"{head} of each trial alone, " + "; ".join(sorted(methods))}}
    write_json(sdir / "report.json", report)
    write_text(sdir / "report.csv", _csv(report))
    write_text(sdir / "report.md", report_markdown(report))
    report["plots"] = [str(p) for p in plot_axes(report, sdir)]
    write_json(sdir / "report.json", report)
    return report


def _what(state: dict, m: dict) -> str:
    """A base row's or baseline's description (the report's `varied` cell)."""
    if state.get("baseline") == "tfidf":
        chosen = m.get("chosen") or {}
        cv = m.get("cv") or {}
        return ("TF-IDF + logistic regression (CV-chosen: " + ", ".join(f"{k}={v}" for k, v in chosen.items())
                + (f"; CV {cv.get('scoring')} {cv['score']:.4f}" if "score" in cv else "") + ")")
    if state.get("baseline"):
        return f"majority baseline: {m.get('what', 'the train split majority')}"
    if state.get("base"):
        mode = {"head": "untrained head", "generate": "zero-shot generate", "choice": "zero-shot choice"}.get(
            m.get("mode"), str(m.get("mode")))
        if m.get("shots"):
            mode = f"{m['shots']}-shot {m.get('mode')}"
        served = m.get("served")
        if served:
            return f"served model {served['model']} ({mode}, {served['api']} endpoint)"
        return f"base model ({mode})"
    return ""


def seed_groups(trials: list[dict], key: str = "train.seed") -> list[dict]:
    """Trials that differ only in their seed: the values, mean and sample sd of each group of 2+."""
    import statistics

    groups: dict[str, list[dict]] = {}
    for r in trials:
        if key in r["varied"]:
            rest = {k: v for k, v in r["varied"].items() if k != key}
            groups.setdefault(repr(sorted(rest.items())), []).append(r)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        values = [r["value"] for r in members]
        out.append({"varied": {k: v for k, v in members[0]["varied"].items() if k != key},
                    "seeds": [r["varied"][key] for r in members], "trials": [r["trial"] for r in members],
                    "values": values, "mean": statistics.fmean(values), "sd": statistics.stdev(values)})
    return out


def majority_baseline(m: dict, metric: str) -> dict | None:
    """The metric of answering the test set's most frequent gold label for every item (from the
    evaluation's per-class support), for classification metrics; None otherwise."""
    per_class = m.get("per_class")
    if not per_class or "support" not in next(iter(per_class.values())):
        return None
    labels = list(per_class)
    support = [per_class[lab]["support"] for lab in labels]
    if not sum(support):
        return None
    label = labels[max(range(len(support)), key=support.__getitem__)]
    gold = [lab for lab, k in zip(labels, support) for _ in range(k)]
    value = classification_metrics(gold, [label] * len(gold), labels).get(metric)
    return None if value is None else {"value": float(value), "what": f"majority class ({label}) for every item"}


def _fmt(x, spec=".4f") -> str:
    return "" if x is None else format(x, spec)


def _varied(r: dict) -> str:
    if r.get("what"):
        return r["what"]
    return "base model" if r["base"] else (", ".join(f"{k}={v}" for k, v in r["varied"].items()) or "the recipe")


def _test(t: dict | None) -> str:
    if not t:
        return ""
    of = f" of the {t['what']}" if t.get("what") == "mean item score" else ""  # not the metric itself
    return f"{t['delta']:+.4f} (McNemar p={t['mcnemar_p_holm']:.3g}, bootstrap p={t['bootstrap_p_holm']:.3g}{of})"


def report_markdown(rep: dict) -> str:
    head = rep["headline"]
    best_is = "highest" if rep.get("direction", "maximize") == "maximize" else "lowest"
    lines = [f"# Study {rep['study']}: {head}", "",
             f"Every column is {head}. Best = the {best_is} {head}" +
             (f" (tied: {', '.join(rep['tied_best'])}; the first in trial order is taken)" if rep.get("tied_best")
              else "") + f". vs best / vs base: delta {head} = the trial minus the best trial (or the base model) "
             f"on the paired items; {rep['tests']['mcnemar']}; {rep['tests']['bootstrap']}. "
             f"95% CI: {rep['tests']['ci95']}." + (f" Trivial baseline: {head} {rep['trivial']['value']:.4f} "
                                                  f"({rep['trivial']['what']})." if rep.get("trivial") else ""), "",
             f"Tuned rows are tested against the strongest base row ({rep.get('strongest_base') or 'none'}) and "
             f"the strongest baseline ({rep.get('strongest_baseline') or 'none'}).", "",
             f"| trial | varied | {head} | {head} 95% CI | invalid | train s | eval ex/s | vs best (delta {head}) | "
             f"vs strongest base (delta {head}) | vs strongest baseline (delta {head}) |",
             "|---|---|---:|---|---:|---:|---:|---|---|---|"]
    for r in rep["rows"]:
        mark = " **(best)**" if r["trial"] == rep["best"] else ""
        mark += f" (predicts {r['one_class']} for every item)" if r.get("one_class") else ""
        ci = f"[{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]"
        lines.append(f"| {r['trial']}{mark} | {_varied(r)} | {_fmt(r['value'])} | {ci} | "
                     f"{_fmt(r['invalid_rate'], '.2%')} | {_fmt(r['train_seconds'], '.0f')} | "
                     f"{_fmt(r.get('eval_examples_per_s'), '.2f')} | {_test(r['vs_best'])} | "
                     f"{_test(r['vs_base'])} | {_test(r.get('vs_baseline'))} |")
    if rep.get("seeds"):
        lines += ["", f"Seed-to-seed spread (trials that differ only in train.seed): {head} mean, sample sd, each seed.",
                  "", "| varied | seeds | mean | sd | each seed |", "|---|---|---:|---:|---|"]
        for g in rep["seeds"]:
            lines.append(f"| {', '.join(f'{k}={v}' for k, v in g['varied'].items()) or 'the recipe'} | "
                         f"{', '.join(map(str, g['seeds']))} | {g['mean']:.4f} | {g['sd']:.4f} | "
                         f"{', '.join(f'{v:.4f}' for v in g['values'])} |")
    return "\n".join(lines) + "\n"


def _csv(rep: dict) -> str:
    buf = io.StringIO()
    h = rep["headline"]
    cols = ["trial", "base", *rep["axes"], h, f"{h}_ci95_low", f"{h}_ci95_high", "invalid_rate",
            "train_seconds", "eval_examples_per_s", f"vs_best_delta_{h}", "vs_best_mcnemar_p_holm", f"vs_best_bootstrap_{h}_p_holm",
            f"vs_base_delta_{h}", "vs_base_mcnemar_p_holm", f"vs_base_bootstrap_{h}_p_holm",
            f"vs_baseline_delta_{h}", "vs_baseline_mcnemar_p_holm", "run_dir"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rep["rows"]:
        t1, t2, t3 = r["vs_best"] or {}, r["vs_base"] or {}, r.get("vs_baseline") or {}
        w.writerow([r["trial"], r["base"], *(r["varied"].get(a, "") for a in rep["axes"]), r["value"],
                    r["ci95"][0], r["ci95"][1], r["invalid_rate"], r["train_seconds"],
                    r.get("eval_examples_per_s"), t1.get("delta"),
                    t1.get("mcnemar_p_holm"), t1.get("bootstrap_p_holm"), t2.get("delta"), t2.get("mcnemar_p_holm"),
                    t2.get("bootstrap_p_holm"), t3.get("delta"), t3.get("mcnemar_p_holm"), r["run_dir"]])
    return buf.getvalue()


def plot_axes(rep: dict, sdir: Path) -> list[Path]:
    """One PNG per varied key: the metric (with its CI) at each value, the best trial marked, the base
    model and the trivial baseline (majority class) as lines, a log axis over a 5x+ numeric range."""
    head = rep["headline"]
    trials = [r for r in rep["rows"] if not (r["base"] or r.get("baseline"))]
    bases = [r for r in rep["rows"] if r["base"]]
    base = next((r for r in bases if r["trial"] == rep.get("strongest_base")), bases[0] if bases else None)
    base_name = "base model" if len(bases) == 1 else f"strongest base ({base['trial']})" if base else ""
    paths = []
    for axis in rep["axes"] or ([None] if base else []):
        fig, ax = plots.figure(8, 4.2)
        pts = [(r["varied"].get(axis), r) for r in trials if axis is None or axis in r["varied"]]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _ in pts) and pts
        xs = [v if numeric else str(v) for v, _ in pts]
        ys = [r["value"] for _, r in pts]
        lows = [r["ci95"][0] if r["ci95"][0] is not None else r["value"] for _, r in pts]
        highs = [r["ci95"][1] if r["ci95"][1] is not None else r["value"] for _, r in pts]
        ax.errorbar(xs, ys, yerr=[[y - lo for y, lo in zip(ys, lows)], [hi - y for y, hi in zip(ys, highs)]],
                    fmt="o", capsize=4, color="tab:blue", label="trials (95% CI)")
        best = [(x, r["value"]) for x, (_, r) in zip(xs, pts) if r["trial"] == rep.get("best")]
        if best:
            ax.plot(*best[0], marker="*", markersize=16, color="tab:red", linestyle="none",
                    label=f"best {best[0][1]:.3f}")
        if numeric and len(set(xs)) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 5:
            ax.set_xscale("log")  # learning rates and the like: a 10x range reads on a log axis
        lines = []
        if base is not None:
            ax.axhline(base["value"], color="tab:gray", linestyle="--", label=f"{base_name} {base['value']:.3f}")
            lines.append(base["value"])
        strong = next((r for r in rep["rows"] if r["trial"] == rep.get("strongest_baseline")), None)
        if strong is not None and strong["trial"] != (rep.get("trivial") or {}).get("row"):
            ax.axhline(strong["value"], color="tab:green", linestyle="-.", linewidth=1,
                       label=f"strongest baseline ({strong['trial']}) {strong['value']:.3f}")
            lines.append(strong["value"])
        if rep.get("trivial"):
            t = rep["trivial"]
            ax.axhline(t["value"], color="black", linestyle=":", linewidth=1, label=f"{t['what']} {t['value']:.3f}")
            lines.append(t["value"])
        plots.unit_ylim(ax, head, lows + lines, highs + lines)
        ax.set_xlabel(axis or "trial")
        ax.set_ylabel(head)
        ax.set_title(f"{rep['study']}: {head} by {axis}" if axis else f"{rep['study']}: {head}", fontsize=10)
        ax.grid(True, alpha=0.3)
        plots.legend_outside(ax)
        paths.append(plots.save(fig, sdir / f"axis-{re.sub(r'[^A-Za-z0-9._-]+', '_', axis or 'trials')}.png"))
    return paths


def _short_test(t: dict | None) -> str:
    """A paired test in a terminal cell: the delta and the Holm-corrected McNemar p."""
    return "" if not t else f"{t['delta']:+.3f} p={t['mcnemar_p_holm']:.1g}"


def terminal_table(rep: dict, width: int = 100):
    """The study table for a terminal of `width` columns: one column per varied key (its last name part,
    split at underscores; the full keys are said under the table), short cells, nothing cut; the "vs
    best" column is left out when the table would not fit. The full table, with train time, throughput
    and both p-values, is report.md."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    head = rep["headline"]
    names = {a: a.rsplit(".", 1)[-1] for a in rep["axes"]}
    if len(set(names.values())) < len(names):  # two axes end alike: keep the full keys
        names = {a: a for a in rep["axes"]}

    def cell(r, a):
        v = r["varied"].get(a, "")
        return format(v, "g") if isinstance(v, float) else str(v)

    def build(with_best: bool):
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                      title=f"{rep['study']}: {head} (* best; vs base" + (" / vs best" if with_best else "") +
                      ": delta, McNemar p, Holm)")
        table.add_column("trial", no_wrap=True)
        for a in rep["axes"]:
            header = names[a].replace("_", "_\n").replace(".", ".\n")
            widest = max([len(x) for x in header.split("\n")] + [len(cell(r, a)) for r in rep["rows"]])
            table.add_column(header, min_width=min(widest, 16), overflow="fold")
        for col in (head, "95% CI", "invalid"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("vs base", no_wrap=True)
        if with_best:
            table.add_column("vs best", no_wrap=True)
        for r in rep["rows"]:
            mark = "*" if r["trial"] == rep["best"] else ("!" if r.get("one_class") else "")
            ci = "" if r["ci95"][0] is None else f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}"
            row = [r["trial"] + mark, *(cell(r, a) for a in rep["axes"]), f"{r['value']:.4f}", ci,
                   _fmt(r["invalid_rate"], ".1%"), _short_test(r["vs_base"])]
            table.add_row(*row, *([_short_test(r["vs_best"])] if with_best else []))
        return table

    table = build(True)
    if Console(width=1000).measure(table).maximum > width:
        table = build(False)
    return table


def print_report(rep: dict) -> None:
    from rich.console import Console

    console = Console()
    console.print(terminal_table(rep, console.width))
    short = {a: a.rsplit(".", 1)[-1] for a in rep["axes"]}
    said = [f"{v} = {k}" for k, v in short.items() if v != k]
    if said:
        print("columns: " + ", ".join(said))
    if any(r.get("one_class") for r in rep["rows"]):
        print("! predicts one class for every item: " + ", ".join(f"{r['trial']} ({r['one_class']})"
                                                                for r in rep["rows"] if r.get("one_class")))
    if rep.get("trivial"):
        print(f"trivial baseline: {rep['headline']} {rep['trivial']['value']:.4f} ({rep['trivial']['what']})")
    for g in rep.get("seeds", []):
        varied = ", ".join(f"{k}={v}" for k, v in g["varied"].items()) or "the recipe"
        print(f"seeds {', '.join(map(str, g['seeds']))} ({varied}): {rep['headline']} mean {g['mean']:.4f}, "
              f"sd {g['sd']:.4f}")
    for p in rep.get("plots", []):
        print(f"plot: {p}")
    print(f"report: {Path(rep['study_dir']) / 'report.md'} (.csv, .json; train time, throughput, bootstrap p)")
