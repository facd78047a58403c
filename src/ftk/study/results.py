"""Published study results: what a finished study leaves in a results folder (committed to the
repository), and every figure of the README's table recomputed from it.

`export_study` copies, for each row of a finished study (base rows, baselines, trials): the metrics
JSON and the per-item results (`items.jsonl`: id, gold and predicted label or IOB2 tags, correct,
invalid, label probabilities where labels were scored; never the dataset's text), and one
`study.json` with each row's provenance (git commit, package versions, seed, CPU model and flags,
train and eval time, whether the machine was shared while it ran).

`rebuild` reads only those files: each row's accuracy, macro-F1 or entity F1 and its 95% CI are
recomputed from the items with ftk's metric functions and must equal the recorded metrics (else
`ResultsMismatch`), the paired McNemar tests against the strongest base row and the strongest
baseline are recomputed from the items' correctness (Holm within the study), and seeds are summarised.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from ftk.errors import FtkError
from ftk.eval import metrics as M
from ftk.eval.compare import mcnemar
from ftk.eval.report import ITEMS
from ftk.fileio import read_json, write_json

STUDY_FILE = "study.json"
VERSIONS = ("ftk", "torch", "transformers", "peft", "llamafactory", "scikit-learn", "accelerate")
# metrics.json keys that hold this machine's paths: not published
_LOCAL = ("run_dir", "model", "adapter", "recipe", "predictions", "identity")
TOL = 1e-9


class ResultsMismatch(FtkError):
    """A recorded figure that the published items do not reproduce."""


def _provenance(run: dict, m: dict) -> dict:
    versions = {**(m.get("versions") or {}), **(run.get("versions") or {})}
    dev = run.get("device") or {}
    return {"git_commit": run.get("git_commit"), "seed": run.get("seed"), "started": run.get("started"),
            "train_seconds": run.get("train_seconds"), "eval_seconds": m.get("eval_seconds"),
            "eval_examples_per_s": m.get("examples_per_s"),
            "versions": {k: versions[k] for k in VERSIONS if k in versions},
            "cpu_model": dev.get("cpu_model"), "cpu_flags": dev.get("cpu_flags"), "cpu_count": dev.get("cpu_count"),
            "load_avg_at_start": dev.get("load_avg"), "gpus": dev.get("gpus")}


def export_study(sdir: Path, out: Path, *, contended: bool, note: str = "", merge: bool = False) -> Path:
    """results/<study>/: study.json, and <row>/metrics.json + items.jsonl for every row.

    merge: keep the rows already published for this study that `sdir` does not hold (a study finished
    over several sessions or machines); a row present in both is replaced. Trial names carry the hash
    of the trial's settings, so a kept row is the same trial; each row keeps its own provenance."""
    from ftk.study.report import study_report
    from ftk.train.runs import cpu_info

    rep = study_report(sdir)
    dest = out / rep["study"].removeprefix("study-")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for r in rep["rows"]:
        ev = Path(r["eval_dir"])
        if not (ev / ITEMS).is_file():
            raise FtkError(f"no {ITEMS} (evaluated by an older ftk): score it again with `ftk eval` (its predictions "
                           "are reused)", path=ev)
        m = read_json(ev / "metrics.json", what="trial metrics")
        run = {} if r.get("baseline") else read_json(Path(r["run_dir"], "manifest.json"), what="run manifest")
        (tmp / r["trial"]).mkdir(parents=True)
        write_json(tmp / r["trial"] / "metrics.json", {k: v for k, v in m.items() if k not in _LOCAL})
        shutil.copyfile(ev / ITEMS, tmp / r["trial"] / ITEMS)
        rows.append({"trial": r["trial"], "kind": "base" if r["base"] else "baseline" if r.get("baseline") else "trial",
                     "what": r.get("what") or "", "varied": r["varied"], "task": m.get("task"),
                     "labels": list(m.get("per_class") or []) if m.get("kind") != "ner" else None,
                     "mode": m.get("mode"), "n": m.get("n"), "contended": contended,
                     "provenance": _provenance(run, m)})
    notes = [note] if note else []
    if merge and (dest / STUDY_FILE).is_file():
        old = read_json(dest / STUDY_FILE, what="published study")
        if old.get("headline") != rep["headline"]:
            raise FtkError(f"the published study scores {old.get('headline')!r}, this one {rep['headline']!r}: "
                           "export without --merge", path=dest / STUDY_FILE)
        have = {r["trial"] for r in rows}
        for r in old["rows"]:
            if r["trial"] not in have:
                shutil.copytree(dest / r["trial"], tmp / r["trial"])
                rows.append({**r, "contended": r.get("contended", bool(old.get("contended")))})
        notes = [n for n in (old.get("note"), note) if n]
        rank = {"base": 0, "baseline": 1, "trial": 2}
        rows.sort(key=lambda r: (rank[r["kind"]], r["trial"]))
    write_json(tmp / STUDY_FILE, {
        "study": dest.name, "headline": rep["headline"], "direction": rep["direction"], "rows": rows,
        "contended": any(r["contended"] for r in rows), "note": "; ".join(notes), "exported_on": cpu_info(),
        "tests": rep["tests"]})
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _items(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=TOL)


def recompute(items: list[dict], labels: list[str] | None, where: Path | None = None) -> dict:
    """The figures of one row from its items alone (ftk's metric functions); each item's `correct`
    must follow from its gold and prediction."""
    for it in items:
        same = it["gold_tags"] == it["pred_tags"] if "gold_tags" in it else it["gold"] == it["pred"]
        if bool(it["correct"]) != (same and not it["invalid"]):
            raise ResultsMismatch(f"item {it['id']}: `correct` is {it['correct']} but its gold and prediction say "
                                  "otherwise", path=where)
    if items and "gold_tags" in items[0]:
        gold, pred = [it["gold_tags"] for it in items], [it["pred_tags"] for it in items]
        out = M.ner_metrics(gold, pred)
        out["ci95"] = {"f1": list(M.ner_f1_ci(gold, pred, n_boot=200))}
    else:
        gold, pred = [it["gold"] for it in items], [it["pred"] for it in items]
        out = M.classification_metrics(gold, pred, labels)
        out["ci95"] = {k: list(M.classification_ci(gold, pred, labels, k)) for k in ("accuracy", "macro_f1")}
    out["n"] = len(items)
    out["invalid_rate"] = sum(it["invalid"] for it in items) / len(items) if items else 0.0
    return out


def check_row(fig: dict, recorded: dict, where: Path) -> None:
    for key in ("accuracy", "macro_f1", "f1", "token_accuracy", "invalid_rate", "n"):
        if key in recorded and key in fig and not _close(fig[key], recorded[key]):
            raise ResultsMismatch(f"{key}: the items give {fig[key]!r}, the metrics say {recorded[key]!r}", path=where)
    for key, ci in fig["ci95"].items():
        rec = (recorded.get("ci95") or {}).get(key)
        if rec is not None and not all(_close(a, b) for a, b in zip(ci, rec)):
            raise ResultsMismatch(f"ci95.{key}: the items give {ci}, the metrics say {rec}", path=where)


def rebuild_study(folder: Path) -> dict:
    """study.json's rows with every figure recomputed from the items and checked against metrics.json."""
    from statsmodels.stats.multitest import multipletests

    from ftk.study.report import seed_groups

    study = read_json(folder / STUDY_FILE, what="published study")
    head = study["headline"]
    pick = max if study.get("direction", "maximize") == "maximize" else min
    rows = []
    for row in study["rows"]:
        items = _items(folder / row["trial"] / ITEMS)
        recorded = read_json(folder / row["trial"] / "metrics.json", what="published metrics")
        fig = recompute(items, row.get("labels"), folder / row["trial"] / ITEMS)
        check_row(fig, recorded, folder / row["trial"])
        rows.append({**row, "fig": fig, "value": fig[head], "items": {it["id"]: it for it in items}})
    strongest = {kind: pick((r for r in rows if r["kind"] == kind), key=lambda r: r["value"], default=None)
                 for kind in ("base", "baseline")}
    for kind, ref in strongest.items():
        tuned = [r for r in rows if r["kind"] == "trial"] if ref else []
        for r in tuned:
            if set(r["items"]) != set(ref["items"]):
                raise ResultsMismatch(f"{r['trial']} and {ref['trial']} are not scored on the same items", path=folder)
            ids = sorted(r["items"])
            a = np.array([ref["items"][i]["correct"] for i in ids])
            b = np.array([r["items"][i]["correct"] for i in ids])
            r[f"vs_{kind}"] = {"ref": ref["trial"], "delta": r["value"] - ref["value"], **mcnemar(a, b)}
        if tuned:
            for r, p in zip(tuned, multipletests([r[f"vs_{kind}"]["p_value"] for r in tuned], method="holm")[1]):
                r[f"vs_{kind}"]["p_holm"] = float(p)
    seeds = [dict(g, last=g["trials"][-1]) for g in seed_groups([r for r in rows if r["kind"] == "trial"])]
    for r in rows:
        del r["items"]
    return {**study, "rows": rows, "seeds": seeds,
            "strongest": {k: (v["trial"] if v else None) for k, v in strongest.items()}}
