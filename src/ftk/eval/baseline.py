"""`ftk baseline RECIPE`: TF-IDF + logistic regression (scikit-learn) trained on the recipe's prepared
train split and scored on its eval split by the one scoring module, into an eval folder that `ftk
compare` and reports take like any other. It is the bar a fine-tuned model has to clear, and the
first thing a practitioner checks: on the S2 twin's split it beats the tiny from-scratch model.
"""

from __future__ import annotations

import time
from pathlib import Path

from ftk.data.records import read_records
from ftk.data.task import load_task
from ftk.errors import FtkError
from ftk.eval.evaluate import split_records
from ftk.eval.predictions import PREDICTIONS, base_row, write_rows
from ftk.eval.report import write_outputs
from ftk.eval.scoring import score
from ftk.recipe import Recipe
from ftk.train.hf.data import text_of
from ftk.train.run import ensure_prepared

MODEL = "tfidf+logreg"


def check_classification(recipe: Recipe, recipe_path: str | Path) -> None:
    task = load_task(recipe.task)
    if not task.is_classification:
        raise FtkError(f"a TF-IDF baseline needs a closed label set; task {task.name!r} is {task.kind}",
                       path=recipe_path, where="task")


def tfidf_baseline(recipe: Recipe, recipe_path: str | Path, *, out_dir: str | Path | None = None,
                   split: str | None = None, limit: int | None = None) -> tuple[dict, Path]:
    """Fit on the train split (word 1-2-grams, sublinear tf; L2 logistic regression, lbfgs, seeded),
    predict the eval split, score it; return (metrics, eval folder)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    check_classification(recipe, recipe_path)
    task = load_task(recipe.task)
    split = split or recipe.eval.split
    manifest = ensure_prepared(recipe, recipe_path)
    prepared = Path(recipe.data.prepared_dir)
    if "train" not in manifest.get("splits", {}):
        raise FtkError("prepared data has no train split to fit on (set `data.train`)", path=prepared / "manifest.json")
    train = read_records(prepared / manifest["splits"]["train"]["file"])
    records, _ = split_records(prepared, split, limit=limit or recipe.eval.limit)
    t0 = time.perf_counter()
    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                        LogisticRegression(max_iter=2000, random_state=recipe.train.seed))
    clf.fit([text_of(r) for r in train], [r["label"] for r in train])
    predicted = clf.predict([text_of(r) for r in records])
    seconds = time.perf_counter() - t0
    preds = {r["id"]: {**base_row(r), "predict": task.target_for(str(p)), "engine": MODEL}
             for r, p in zip(records, predicted)}
    metrics, rows = score(task, records, preds)
    metrics.update({"split": split, "model": MODEL, "mode": "baseline", "engine": MODEL, "train_rows": len(train),
                    "fit_predict_seconds": round(seconds, 3), "recipe": str(recipe_path)})
    out = Path(out_dir) if out_dir else Path(recipe.runs_dir) / f"{recipe.name}-baseline" / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out / PREDICTIONS, [preds[r["id"]] for r in records])
    write_outputs(out, metrics, rows, task)
    return metrics, out
