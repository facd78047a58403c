"""`make demo` / `ftk demo`: the whole job offline on a seeded synthetic AG News.

synthetic CSVs -> tiny model (tokenizer trained on the train text) -> prepare -> train -> eval.
"""

from __future__ import annotations

from pathlib import Path

from ftk.data import synth
from ftk.data.prepare import prepare_recipe
from ftk.eval.evaluate import evaluate_run
from ftk.eval.report import print_table
from ftk.recipe import load_recipe
from ftk.train.run import ensure_model, train

DEFAULT_RECIPE = "configs/agnews_tiny_cpu.yaml"


def ensure_synthetic(data_dir: Path, seed: int = 0) -> None:
    if not (data_dir / "train.csv").exists() or not (data_dir / "test.csv").exists():
        print(f"[ftk] writing synthetic AG News to {data_dir}")
        synth.write_dataset(data_dir, n_train=2000, n_test=400, seed=seed)


def run_demo(recipe_path: str = DEFAULT_RECIPE, overrides: list[str] | None = None) -> tuple[dict, Path]:
    recipe = load_recipe(recipe_path, overrides)
    data_dir = Path(recipe.data.train).parent
    ensure_synthetic(data_dir)
    ensure_model(recipe)
    prepare_recipe(recipe)
    run_dir = train(recipe, recipe_path, overrides)
    metrics, out_dir = evaluate_run(run_dir)
    print_table(metrics)
    print(f"[ftk] run directory: {run_dir}")
    print(f"[ftk] reports: {out_dir}/report.md, metrics.json, confusion.png, errors.jsonl")
    return metrics, run_dir
