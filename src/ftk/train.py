"""`ftk train`: recipe -> run directory with the LLaMA-Factory YAML, manifest and a real launch.

Reads top to bottom: resolve data -> make run dir -> render configs -> write manifest -> launch
-> record the outcome. `--dry-run` renders and prints without creating or running anything.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ftk import launch, llamafactory, runs
from ftk.errors import FtkError
from ftk.prepare import load_manifest, prepare
from ftk.recipe import Recipe
from ftk.tasks import load_task

CONFIG_NAME = "llamafactory.yaml"
DEEPSPEED_NAME = "deepspeed.json"


@dataclass
class TrainPlan:
    run_dir: Path
    train_args: dict
    deepspeed: dict | None
    argv: list[str]

    def yaml_text(self) -> str:
        return yaml.safe_dump(self.train_args, sort_keys=False, allow_unicode=True)


def ensure_prepared(recipe: Recipe) -> dict:
    """The prepared-data manifest, running `prepare` first if the data is not there yet."""
    prepared = Path(recipe.data.prepared_dir)
    if not (prepared / "manifest.json").exists():
        task = load_task(recipe.task)
        print(f"[ftk] preparing data into {prepared}")
        return prepare(task, recipe.data.sources(), prepared, prompt_version=recipe.data.prompt_version,
                       seed=recipe.data.seed, max_samples=recipe.data.max_samples,
                       val_size=recipe.data.val_size, source_format=recipe.data.source_format)
    return load_manifest(prepared)


def plan(recipe: Recipe, run_dir: Path, data_manifest: dict | None, *, node_rank: int = 0,
         master_addr: str | None = None, master_port: int | None = None) -> TrainPlan:
    splits = (data_manifest or {}).get("splits", {})
    prefix = load_task(recipe.task).name
    train_ds = splits.get("train", {}).get("dataset", f"{prefix}_train")
    eval_ds = splits.get("validation", {}).get("dataset") if "validation" in splits else None
    d = recipe.distributed
    ds_cfg, ds_path = None, None
    if d.deepspeed:
        ds_cfg = llamafactory.deepspeed_config(d.deepspeed)
        ds_path = str(run_dir / DEEPSPEED_NAME)
    elif d.deepspeed_config:
        ds_path = d.deepspeed_config
    args = llamafactory.render_train_args(
        recipe, dataset_dir=str(Path(recipe.data.prepared_dir)), train_dataset=train_ds,
        output_dir=str(run_dir / "model"), eval_dataset=eval_ds, deepspeed_path=ds_path)
    argv = launch.build_train_argv(
        str(run_dir / CONFIG_NAME), nnodes=d.nnodes, nproc_per_node=d.nproc_per_node,
        node_rank=node_rank, master_addr=master_addr or d.master_addr,
        master_port=master_port or d.master_port)
    return TrainPlan(run_dir, args, ds_cfg, argv)


def dry_run(recipe: Recipe) -> TrainPlan:
    run_dir = Path(recipe.runs_dir) / f"{recipe.name}-<timestamp>"
    manifest = None
    prepared = Path(recipe.data.prepared_dir) / "manifest.json"
    if prepared.exists():
        manifest = load_manifest(recipe.data.prepared_dir)
    return plan(recipe, run_dir, manifest)


def train(recipe: Recipe, recipe_path: str | Path, overrides: list[str] | None = None) -> Path:
    """Run LLaMA-Factory training for the recipe in a new run directory; return its path."""
    if not recipe.data.train and not Path(recipe.data.prepared_dir, "manifest.json").exists():
        raise FtkError("no training data: set `data.train`", path=recipe_path, where="data.train")
    data_manifest = ensure_prepared(recipe)
    if "train" not in data_manifest.get("splits", {}):
        raise FtkError("prepared data has no train split", path=Path(recipe.data.prepared_dir) / "manifest.json")
    run_dir = runs.new_run_dir(recipe.runs_dir, recipe.name)
    p = plan(recipe, run_dir, data_manifest)
    (run_dir / CONFIG_NAME).write_text(p.yaml_text(), encoding="utf-8")
    if p.deepspeed:
        (run_dir / DEEPSPEED_NAME).write_text(json.dumps(p.deepspeed, indent=2), encoding="utf-8")
    (run_dir / "recipe.yaml").write_text(
        yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8")
    env_extra = {}
    if recipe.tracking.report_to == "wandb" and not os.environ.get("WANDB_API_KEY"):
        env_extra = {"WANDB_MODE": "offline", "WANDB_DIR": str(run_dir)}
    env = launch.launch_env(env_extra)
    manifest = {
        "kind": "train",
        "recipe_path": str(recipe_path),
        "overrides": overrides or [],
        "recipe": recipe.model_dump(mode="json"),
        "llamafactory_args": p.train_args,
        "argv": p.argv,
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "status": "running",
        "git_commit": runs.git_commit(),
        "versions": runs.package_versions(),
        "device": runs.device_info(),
        "env": runs.safe_env(env),
        "data": data_manifest,
        "seed": recipe.train.seed,
    }
    runs.write_manifest(run_dir, manifest)
    print(f"[ftk] run directory: {run_dir}")
    print(f"[ftk] launching: {launch.shell_quote(p.argv)}", flush=True)
    t0 = time.perf_counter()
    try:
        rc = launch.run_streaming(p.argv, run_dir / "train.log", env=env)
    except KeyboardInterrupt:
        rc = 130
    manifest.update({"status": "finished" if rc == 0 else "failed", "exit_code": rc,
                     "train_seconds": round(time.perf_counter() - t0, 2),
                     "ended": _dt.datetime.now().isoformat(timespec="seconds")})
    runs.write_manifest(run_dir, manifest)
    if rc != 0:
        raise TrainingFailed(f"training failed with exit code {rc}; log: {run_dir / 'train.log'}", rc)
    return run_dir


class TrainingFailed(RuntimeError):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
