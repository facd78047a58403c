"""`ftk train`: recipe -> run directory with the LLaMA-Factory YAML, manifest and a real launch.

Reads top to bottom: resolve data (prepare if needed) -> make the run dir -> per stage: render
configs, launch, record the outcome in manifest.json. `--dry-run` renders and prints without
creating or running anything; `--slurm` writes an sbatch script instead of launching; `--resume`
continues a run from its last checkpoint.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import time
from pathlib import Path

import yaml

from ftk.data.prepare import load_manifest, prepare_recipe, recipe_fingerprint
from ftk.errors import FtkError
from ftk.recipe import Recipe
from ftk.train import launch, runs
from ftk.train.plan import (
    CONFIG_NAME,
    DEEPSPEED_NAME,
    StagePlan,
    Topology,
    plan,
    plan_stage,
)
from ftk.train.prompts import fit_for_training


def ensure_prepared(recipe: Recipe) -> dict:
    """The prepared-data manifest, running `prepare` first if the data is not there yet."""
    prepared = Path(recipe.data.prepared_dir)
    if (prepared / "manifest.json").exists():
        manifest = load_manifest(prepared)
        if manifest.get("recipe_fingerprint") == recipe_fingerprint(recipe):
            return manifest
        print(f"[ftk] {prepared} was prepared from other settings; preparing again")
    else:
        print(f"[ftk] preparing data into {prepared}")
    return prepare_recipe(recipe)


def ensure_model(recipe: Recipe) -> None:
    """Build the recipe's tiny model from its train text when `model.tiny` is set and it is missing."""
    spec = recipe.model.tiny
    path = Path(recipe.model.name_or_path)
    if spec is None or (path / "config.json").exists():
        return
    from ftk.data.sources import iter_lines
    from ftk.train.tiny import build_tiny_model

    texts = [s for s in (recipe.data.train, recipe.data.validation) if s and Path(s).is_file()]
    if not texts:
        raise FtkError("`model.tiny` needs a local `data.train` file to train its tokenizer", where="model.tiny")
    print(f"[ftk] building tiny model in {path}")
    build_tiny_model(path, iter_lines(texts), hidden_size=spec.hidden_size, num_layers=spec.layers,
                     num_heads=spec.heads, num_kv_heads=spec.kv_heads, vocab_size=spec.vocab_size, seed=spec.seed)


def _write_stage_files(p: StagePlan) -> None:
    p.dir.mkdir(parents=True, exist_ok=True)
    (p.dir / CONFIG_NAME).write_text(p.yaml_text(), encoding="utf-8")
    if p.deepspeed:
        (p.dir / DEEPSPEED_NAME).write_text(json.dumps(p.deepspeed, indent=2), encoding="utf-8")


def _env_for(recipe: Recipe, run_dir: Path) -> dict[str, str]:
    extra = {}
    if recipe.tracking.report_to == "wandb":
        extra["WANDB_DIR"] = str(run_dir)
        if recipe.tracking.project:
            extra["WANDB_PROJECT"] = recipe.tracking.project
        if not os.environ.get("WANDB_API_KEY"):
            extra["WANDB_MODE"] = "offline"
    return launch.launch_env(extra)


def _base_manifest(recipe: Recipe, recipe_path, overrides, plans: list[StagePlan], env: dict) -> dict:
    return {
        "kind": "train",
        "name": recipe.name,
        "recipe_path": str(recipe_path),
        "overrides": overrides or [],
        "recipe": recipe.model_dump(mode="json"),
        "stages": [{"name": p.name, "dir": str(p.dir), "llamafactory_args": p.train_args, "argv": p.argv,
                    "status": "pending"} for p in plans],
        "llamafactory_args": plans[-1].train_args,
        "argv": plans[-1].argv,
        "model_dir": str(plans[-1].dir / "model"),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "status": "running",
        "git_commit": runs.git_commit(),
        "versions": runs.package_versions(),
        "device": runs.device_info(),
        "env": runs.safe_env(env),
        "seed": recipe.train.seed,
    }


def _run_stages(plans: list[StagePlan], manifest: dict, run_dir: Path, env: dict, first: int = 0) -> None:
    for i, p in enumerate(plans):
        if i < first:
            continue
        print(f"[ftk] stage {p.name}: {launch.shell_quote(p.argv)}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = launch.run_streaming(p.argv, run_dir / "train.log", env=env)
        except KeyboardInterrupt:
            rc = 130
        st = manifest["stages"][i]
        st.update({"status": "finished" if rc == 0 else "failed", "exit_code": rc,
                   "seconds": round(time.perf_counter() - t0, 2)})
        if rc != 0:
            manifest.update({"status": "failed", "exit_code": rc,
                             "ended": _dt.datetime.now().isoformat(timespec="seconds")})
            runs.write_manifest(run_dir, manifest)
            raise TrainingFailed(f"training failed with exit code {rc}; log: {run_dir / 'train.log'}", rc)
        runs.write_manifest(run_dir, manifest)
    manifest.update({"status": "finished", "exit_code": 0,
                     "train_seconds": round(sum(s.get("seconds", 0) for s in manifest["stages"]), 2),
                     "ended": _dt.datetime.now().isoformat(timespec="seconds")})
    runs.write_manifest(run_dir, manifest)


def train(recipe: Recipe, recipe_path: str | Path, overrides: list[str] | None = None, *,
          topo: Topology | None = None, slurm: bool = False) -> Path:
    """Run LLaMA-Factory training for the recipe in a new run directory; return its path."""
    if not recipe.data.train and not Path(recipe.data.prepared_dir, "manifest.json").exists():
        raise FtkError("no training data: set `data.train`", path=recipe_path, where="data.train")
    ensure_model(recipe)
    stage_data, dataset_dirs, fits = {}, {}, {}
    for name, stage in recipe.stage_recipes():  # every stage's data before anything launches
        m = ensure_prepared(stage)
        if "train" not in m.get("splits", {}):
            raise FtkError("prepared data has no train split", path=Path(stage.data.prepared_dir) / "manifest.json")
        stage_data[name] = m
        dataset_dirs[name], fits[name] = fit_for_training(stage, m)
    data_manifest = stage_data[name]  # the last stage's data, the one `ftk eval` uses
    run_dir = runs.new_run_dir(recipe.runs_dir, recipe.name)
    topo = _single_node_port(recipe, topo or Topology())
    plans = plan(recipe, run_dir, topo, dataset_dirs)
    for p in plans:
        _write_stage_files(p)
    (run_dir / "recipe.yaml").write_text(
        yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8")
    env = _env_for(recipe, run_dir)
    manifest = _base_manifest(recipe, recipe_path, overrides, plans, env)
    manifest["data"] = data_manifest
    manifest["fit"] = fits[name]
    for st in manifest["stages"]:
        st["fit"] = fits[st["name"]]
    if len(stage_data) > 1:
        manifest["data_stages"] = stage_data
    print(f"[ftk] run directory: {run_dir}")
    if slurm:
        from ftk.train.slurm import submit, write_sbatch

        script = write_sbatch(recipe, plans, run_dir)
        manifest.update({"status": "submitted" if shutil.which("sbatch") else "written", "sbatch": str(script)})
        runs.write_manifest(run_dir, manifest)
        submit(script)
        return run_dir
    runs.write_manifest(run_dir, manifest)
    _run_stages(plans, manifest, run_dir, env)
    return run_dir


def _single_node_port(recipe: Recipe, topo: Topology) -> Topology:
    """On one node, a busy default rendezvous port (another job) is swapped for a free one."""
    d = recipe.distributed
    port = topo.master_port or d.master_port
    if d.nnodes == 1 and topo.master_port is None and not launch.port_is_free(port):
        new = launch.free_port()
        print(f"[ftk] port {port} is busy; using {new} for this single-node run")
        return Topology(topo.node_rank, topo.master_addr, new)
    return topo


def last_checkpoint(model_dir: Path) -> Path | None:
    ckpts = [p for p in model_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[1])) if ckpts else None


def resume(run_dir: str | Path, topo: Topology | None = None) -> Path:
    """Continue a run in place from the last checkpoint of its first unfinished stage."""
    run_dir = Path(run_dir)
    manifest = runs.read_manifest(run_dir)
    if manifest.get("status") == "finished":
        raise FtkError("run already finished; nothing to resume", path=run_dir)
    recipe = Recipe.model_validate(manifest["recipe"])
    topo = _single_node_port(recipe, topo or Topology())
    dataset_dirs = {st["name"]: st["llamafactory_args"]["dataset_dir"] for st in manifest["stages"]}
    plans = plan(recipe, run_dir, topo, dataset_dirs)
    first = next((i for i, st in enumerate(manifest["stages"]) if st.get("status") != "finished"), 0)
    p = plans[first]
    ckpt = last_checkpoint(p.dir / "model")
    if ckpt is None:
        raise FtkError("no checkpoint to resume from (no checkpoint-* folder yet)", path=p.dir / "model")
    plans[first] = plan_stage(p.name, p.recipe, p.dir, load_manifest(p.recipe.data.prepared_dir),
                              topo, resume_from=str(ckpt), dataset_dir=dataset_dirs.get(p.name))
    _write_stage_files(plans[first])
    env = _env_for(recipe, run_dir)
    manifest.setdefault("resumes", []).append({"from": str(ckpt), "at": _dt.datetime.now().isoformat(timespec="seconds")})
    manifest["stages"][first].update({"llamafactory_args": plans[first].train_args, "argv": plans[first].argv})
    manifest["status"] = "running"
    runs.write_manifest(run_dir, manifest)
    print(f"[ftk] resuming {run_dir} from {ckpt}")
    _run_stages(plans, manifest, run_dir, env, first=first)
    return run_dir


class TrainingFailed(RuntimeError):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
