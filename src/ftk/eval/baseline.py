"""`ftk baseline RECIPE`: the bars a fine-tuned model has to clear, fitted on the recipe's prepared
train split only and scored on its eval split by the one scoring module, into eval folders that
`ftk compare` and study reports take like any other.

- `tfidf` (classification): TF-IDF + logistic regression (scikit-learn) whose configuration is chosen
  by stratified 5-fold cross-validation on the train split (word 1-grams or 1-2-grams, or char_wb
  2-5-grams; sublinear tf on or off; C 0.1 / 1 / 10), scored by the task's headline metric; the
  chosen configuration and its CV score are recorded, then the test split is scored once. A fixed
  configuration would be a weaker bar than scikit-learn's own defaults on some sets.
- `majority`: the train split's most frequent label for every item (for NER: every token O, "all-O").
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
from ftk.eval.scoring import classification_headline, score
from ftk.recipe import Recipe
from ftk.train.hf.data import text_of
from ftk.train.run import ensure_prepared

MODEL = "tfidf+logreg"
MAJORITY = "majority"
METHODS = ("tfidf", "majority")
FOLDS = 5
# The configurations cross-validation chooses from (scikit-learn parameter names).
GRID = [
    {"tfidf__analyzer": ["word"], "tfidf__ngram_range": [(1, 1), (1, 2)], "tfidf__sublinear_tf": [False, True],
     "clf__C": [0.1, 1.0, 10.0]},
    {"tfidf__analyzer": ["char_wb"], "tfidf__ngram_range": [(2, 5)], "tfidf__sublinear_tf": [False, True],
     "clf__C": [0.1, 1.0, 10.0]},
]


def check_baseline(recipe: Recipe, recipe_path: str | Path, method: str = "tfidf") -> None:
    if method not in METHODS:
        raise FtkError(f"--method {method!r}: expected {' or '.join(METHODS)}")
    task = load_task(recipe.task)
    if method == "tfidf" and not task.is_classification:
        raise FtkError(f"a TF-IDF baseline needs a closed label set; task {task.name!r} is {task.kind} (the "
                       "majority baseline, --method majority, is all-O for NER)", path=recipe_path, where="task")
    if method == "majority" and not (task.is_classification or task.kind == "ner"):
        raise FtkError(f"a majority baseline needs labels or tags; task {task.name!r} is {task.kind}",
                       path=recipe_path, where="task")


def _splits(recipe: Recipe, recipe_path, split: str | None, limit: int | None):
    split = split or recipe.eval.split
    manifest = ensure_prepared(recipe, recipe_path)
    prepared = Path(recipe.data.prepared_dir)
    if "train" not in manifest.get("splits", {}):
        raise FtkError("prepared data has no train split to fit on (set `data.train`)", path=prepared / "manifest.json")
    train = read_records(prepared / manifest["splits"]["train"]["file"])
    records, _ = split_records(prepared, split, limit=limit or recipe.eval.limit)
    return split, train, records


def _scoring(task) -> str:
    """scikit-learn's name for the task's headline metric."""
    return "f1_macro" if classification_headline(task) == "macro_f1" else "accuracy"


def choose_tfidf(texts: list[str], labels: list[str], task, seed: int, path=None):
    """(fitted pipeline, chosen parameters, CV score, scoring name): the grid searched by stratified
    K-fold cross-validation on the train rows alone, refitted on all of them."""
    from collections import Counter

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    fewest = min(Counter(labels).values())
    if len(set(labels)) < 2 or fewest < 2:
        raise FtkError("cross-validating the TF-IDF baseline needs at least 2 train rows of at least 2 labels "
                       f"(the train split has {dict(Counter(labels))})", path=path)
    folds = StratifiedKFold(n_splits=min(FOLDS, fewest), shuffle=True, random_state=seed)
    pipe = Pipeline([("tfidf", TfidfVectorizer()),
                     # saga: the same convex optimum as lbfgs, ~10x faster on TF-IDF rows (measured on AG News)
                     ("clf", LogisticRegression(solver="saga", max_iter=2000, random_state=seed))])
    scoring = _scoring(task)
    search = GridSearchCV(pipe, GRID, scoring=scoring, cv=folds, n_jobs=1, refit=True, error_score="raise")
    search.fit(texts, labels)
    chosen = {k.split("__", 1)[1]: (list(v) if isinstance(v, tuple) else v) for k, v in search.best_params_.items()}
    return search.best_estimator_, chosen, float(search.best_score_), scoring, folds.get_n_splits()


def _write(out: Path, task, records: list[dict], preds: dict, extra: dict) -> dict:
    metrics, rows = score(task, records, preds)
    metrics.update(extra)
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out / PREDICTIONS, [preds[r["id"]] for r in records])
    write_outputs(out, metrics, rows, task)
    return metrics


def default_out(recipe: Recipe, method: str, split: str) -> Path:
    suffix = "baseline" if method == "tfidf" else "majority"
    return Path(recipe.runs_dir) / f"{recipe.name}-{suffix}" / f"eval-{split}"


def tfidf_baseline(recipe: Recipe, recipe_path: str | Path, *, out_dir: str | Path | None = None,
                   split: str | None = None, limit: int | None = None) -> tuple[dict, Path]:
    """Choose the configuration by CV on the train split, predict the eval split, score it; return
    (metrics, eval folder)."""
    check_baseline(recipe, recipe_path, "tfidf")
    task = load_task(recipe.task)
    split, train, records = _splits(recipe, recipe_path, split, limit)
    t0 = time.perf_counter()
    clf, chosen, cv_score, scoring, k = choose_tfidf([text_of(r) for r in train], [r["label"] for r in train], task,
                                                     recipe.train.seed, path=Path(recipe.data.prepared_dir))
    predicted = clf.predict([text_of(r) for r in records])
    seconds = time.perf_counter() - t0
    preds = {r["id"]: {**base_row(r), "predict": task.target_for(str(p)), "engine": MODEL}
             for r, p in zip(records, predicted)}
    out = Path(out_dir) if out_dir else default_out(recipe, "tfidf", split)
    metrics = _write(out, task, records, preds, {
        "split": split, "model": MODEL, "mode": "baseline", "engine": MODEL, "baseline": "tfidf",
        "train_rows": len(train), "fit_predict_seconds": round(seconds, 3), "recipe": str(recipe_path),
        "chosen": chosen, "cv": {"folds": k, "scoring": scoring, "score": round(cv_score, 6), "seed": recipe.train.seed,
                                 "grid": [{kk.split("__", 1)[1]: [list(x) if isinstance(x, tuple) else x for x in vv]
                                           for kk, vv in g.items()} for g in GRID]}})
    return metrics, out


def majority_baseline(recipe: Recipe, recipe_path: str | Path, *, out_dir: str | Path | None = None,
                      split: str | None = None, limit: int | None = None) -> tuple[dict, Path]:
    """The train split's most frequent label (ties: the task's label order) for every item; all-O for NER."""
    from collections import Counter

    check_baseline(recipe, recipe_path, "majority")
    task = load_task(recipe.task)
    split, train, records = _splits(recipe, recipe_path, split, limit)
    if task.kind == "ner":
        what = "every token O (all-O)"
        preds = {r["id"]: {**base_row(r), "predict": "", "tags": ["O"] * len(r["tokens"]), "engine": MAJORITY}
                 for r in records}
    else:
        counts = Counter(r["label"] for r in train)
        label = max(task.labels, key=lambda lab: (counts.get(lab, 0), -task.labels.index(lab)))
        what = f"the train split's majority label {label!r} ({counts.get(label, 0)} of {len(train)} rows)"
        preds = {r["id"]: {**base_row(r), "predict": task.target_for(label), "engine": MAJORITY} for r in records}
    out = Path(out_dir) if out_dir else default_out(recipe, "majority", split)
    metrics = _write(out, task, records, preds, {
        "split": split, "model": MAJORITY, "mode": "baseline", "engine": MAJORITY, "baseline": "majority",
        "train_rows": len(train), "what": what, "recipe": str(recipe_path)})
    return metrics, out


def run_baseline(method: str, recipe: Recipe, recipe_path: str | Path, **kwargs) -> tuple[dict, Path]:
    if method not in METHODS:  # the rest of check_baseline runs inside the baseline itself
        raise FtkError(f"--method {method!r}: expected {' or '.join(METHODS)}")
    return (tfidf_baseline if method == "tfidf" else majority_baseline)(recipe, recipe_path, **kwargs)
