"""`make demo` / `ftk demo`: the whole job offline on a seeded synthetic AG News.

synthetic CSVs -> tiny model (tokenizer trained on the train text) -> prepare -> train -> eval.
"""

from __future__ import annotations

from pathlib import Path

from ftk import synth
from ftk.evaluate import evaluate_run
from ftk.prepare import prepare_recipe
from ftk.recipe import load_recipe
from ftk.report import print_table
from ftk.tiny import build_tiny_model
from ftk.sources import iter_lines
from ftk.train import train

DEFAULT_RECIPE = "configs/agnews_tiny_cpu.yaml"


def ensure_synthetic(data_dir: Path, seed: int = 0) -> None:
    if not (data_dir / "train.csv").exists() or not (data_dir / "test.csv").exists():
        print(f"[ftk] writing synthetic AG News to {data_dir}")
        synth.write_dataset(data_dir, n_train=2000, n_test=400, seed=seed)


def ensure_tiny_model(model_dir: Path, texts: list[str]) -> None:
    if not (model_dir / "config.json").exists():
        print(f"[ftk] building tiny model in {model_dir}")
        build_tiny_model(model_dir, iter_lines(texts))


def run_demo(recipe_path: str = DEFAULT_RECIPE, overrides: list[str] | None = None) -> tuple[dict, Path]:
    recipe = load_recipe(recipe_path, overrides)
    data_dir = Path(recipe.data.train).parent
    ensure_synthetic(data_dir)
    ensure_tiny_model(Path(recipe.model.name_or_path), [recipe.data.train])
    prepare_recipe(recipe)
    run_dir = train(recipe, recipe_path, overrides)
    metrics, out_dir = evaluate_run(run_dir)
    print_table(metrics)
    print(f"[ftk] run directory: {run_dir}")
    print(f"[ftk] reports: {out_dir}/report.md, metrics.json, confusion.png, errors.jsonl")
    return metrics, run_dir
