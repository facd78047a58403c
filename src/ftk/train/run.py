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
from ftk.data.task import load_task
from ftk.errors import FtkError, TrainingFailed, interrupt_code
from ftk.fileio import folder_lock, output_to, write_json
from ftk.recipe import Recipe
from ftk.train import launch, runs
from ftk.train.llamafactory import trainer_verbosity
from ftk.train.lossplot import plot_loss, read_log
from ftk.train.plan import (
    DEEPSPEED_NAME,
    StagePlan,
    Topology,
    plan,
    plan_stage,
)
from ftk.train.prompts import fit_for_training
from ftk.train.screen import TRAINER_LOG, Screen, hms, print_failure


def is_prepared(recipe: Recipe) -> bool:
    """The recipe's data is prepared, from these very settings (task definition and `data`)."""
    prepared = Path(recipe.data.prepared_dir)
    return (prepared / "manifest.json").exists() and \
        load_manifest(prepared).get("recipe_fingerprint") == recipe_fingerprint(recipe)


def ensure_prepared(recipe: Recipe, recipe_path: str | Path | None = None) -> dict:
    """The prepared-data manifest, running `prepare` (atomically) first if the data is not current."""
    prepared = Path(recipe.data.prepared_dir)
    if is_prepared(recipe):
        return load_manifest(prepared)
    if not recipe.data.sources():
        raise FtkError("prepared data is missing or from other settings, and `data` names no source to prepare "
                       "it from", path=recipe_path, where="data")
    with folder_lock(prepared):  # trials started together prepare their shared data once
        if is_prepared(recipe):
            return load_manifest(prepared)
        manifest = prepare_recipe(recipe, recipe_path=recipe_path)
    print(f"[ftk] prepared data: {prepared}", flush=True)
    return manifest


def ensure_model(recipe: Recipe) -> None:
    """Build the recipe's tiny model from its train text when `model.tiny` is set and it is missing;
    fetch and import the real model named by `model.fetch` when that is missing."""
    spec = recipe.model.tiny
    path = Path(recipe.model.name_or_path)
    if recipe.model.fetch:
        from ftk.models.fetch import fetch_model
        from ftk.models.gguf_import import MANIFEST_NAME, verify_import

        if (path / MANIFEST_NAME).exists():  # fetched before: its weights still the imported ones
            verify_import(path)
            return
        if (path / "config.json").exists():
            return
        with folder_lock(path):  # trials started together fetch once
            if not (path / "config.json").exists():
                print(f"[ftk] fetching {recipe.model.fetch} into {path}", flush=True)
                log = path.parent / f".{path.name}.fetch.log"
                try:  # pip's and transformers' chatter: its tail is shown on a failure, then it goes
                    with output_to(log):
                        fetch_model(recipe.model.fetch, path, quiet=True)
                finally:
                    log.unlink(missing_ok=True)
        return
    if (path / "config.json").exists():
        return
    if spec is None:
        return
    from ftk.train.tiny import build_tiny_model

    with folder_lock(path):  # one build when several runs start together; the others wait for it
        if (path / "config.json").exists():
            return
        texts = list(tokenizer_texts(recipe))  # its errors are ftk's, on the terminal
        print(f"[ftk] building tiny model in {path}", flush=True)
        with output_to(path / "ftk-build.log"):  # library chatter, not for the terminal
            build_tiny_model(path, texts, hidden_size=spec.hidden_size, num_layers=spec.layers, num_heads=spec.heads,
                             num_kv_heads=spec.kv_heads, vocab_size=spec.vocab_size, seed=spec.seed)


def tokenizer_texts(recipe: Recipe):
    """The text a tiny model's tokenizer learns from: the train (and validation) files' lines, or,
    for word-per-line formats (IOB2), the prepared sentences, words joined by spaces as the model
    sees them (a tokenizer learnt from `word<TAB>tag` lines splits every word of a sentence)."""
    from ftk.data.records import read_records
    from ftk.data.sources import iter_lines, pick_local_spec

    files = [s for s in (recipe.data.train, recipe.data.validation) if s and Path(s).is_file()]
    if not files:
        raise FtkError("needs a local `data.train` file to train its tokenizer", where="model.tiny")
    task = load_task(recipe.task)
    manifest = load_manifest(recipe.data.prepared_dir) if is_prepared(recipe) else {}
    train = manifest.get("splits", {}).get("train")
    if train and pick_local_spec(task, Path(files[0]), recipe.data.source_format)[1].reader == "iob2":
        for r in read_records(Path(recipe.data.prepared_dir) / train["file"]):
            yield from (r.get("instruction") or "", r.get("input") or "", r.get("output") or "")
        return
    yield from iter_lines(files)


def _write_stage_files(p: StagePlan) -> None:
    p.dir.mkdir(parents=True, exist_ok=True)
    (p.dir / p.config_name).write_text(p.yaml_text(), encoding="utf-8")
    if p.trainer == "ftk":  # ftk's trainer reads the task from the run's own copy
        runs.keep_task_copy(p.dir, p.recipe.task)
    if p.deepspeed:
        (p.dir / DEEPSPEED_NAME).write_text(json.dumps(p.deepspeed, indent=2), encoding="utf-8")


def _env_for(recipe: Recipe, run_dir: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    extra = dict(extra_env or {})
    if recipe.tracking.report_to == "wandb":
        extra["WANDB_DIR"] = str(run_dir)
        if recipe.tracking.project:
            extra["WANDB_PROJECT"] = recipe.tracking.project
        if not os.environ.get("WANDB_API_KEY"):
            extra["WANDB_MODE"] = "offline"
    extra.update(trainer_verbosity())
    return launch.launch_env(extra)


def _base_manifest(recipe: Recipe, recipe_path, overrides, plans: list[StagePlan], env: dict) -> dict:
    return {
        "kind": "train",
        "name": recipe.name,
        "recipe_path": str(recipe_path),
        "overrides": overrides or [],
        "recipe": recipe.model_dump(mode="json"),
        "stages": [{"name": p.name, "dir": str(p.dir), "trainer": p.trainer, p.args_key: p.train_args, "argv": p.argv,
                    "status": "pending"} for p in plans],
        plans[-1].args_key: plans[-1].train_args,
        "argv": plans[-1].argv,
        "model_dir": str(plans[-1].dir / "model"),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "status": "running",
        "git_commit": runs.git_commit(),
        "versions": runs.package_versions(),
        "device": runs.device_info(),
        "env": runs.safe_env(env),
        "seed": recipe.train.seed,
        **runs.process_identity(),
    }


def _run_stages(plans: list[StagePlan], manifest: dict, run_dir: Path, env: dict, first: int = 0,
                verbose: bool = False) -> None:
    log = run_dir / "train.log"
    for i, p in enumerate(plans):
        if i < first:
            continue
        print(f"[ftk] stage {p.name}: {launch.shell_quote(p.argv)}", flush=True)
        t0 = time.perf_counter()
        trainer_log = p.dir / "model" / TRAINER_LOG
        try:
            if verbose:
                rc = launch.run_streaming(p.argv, log, env=env)
            else:
                screen = Screen(p.name, trainer_log)
                try:
                    rc = launch.run_logged(p.argv, log, env=env, on_tick=screen.tick)
                finally:
                    screen.close()
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (errors.Terminated): the trainer was stopped
            rc = interrupt_code(exc)
        seconds = time.perf_counter() - t0
        plot = plot_loss(trainer_log, p.dir / "loss.png", f"{manifest['name']} - stage {p.name}")
        st = manifest["stages"][i]
        st.update({"status": "finished" if rc == 0 else "failed", "exit_code": rc, "seconds": round(seconds, 2),
                   "loss_plot": str(plot) if plot else None})
        if rc != 0:
            manifest.update({"status": "failed", "exit_code": rc,
                             "ended": _dt.datetime.now().isoformat(timespec="seconds")})
            runs.write_manifest(run_dir, manifest)
            if not verbose:
                print_failure(f"stage {p.name}", log, rc)
            what = {130: "training interrupted", 143: "training terminated (SIGTERM)"}.get(rc) \
                or f"training failed with exit code {rc}"
            raise TrainingFailed(f"{what}; log: {log}", rc)
        st["results"] = runs.keep_results(p.dir)  # ftk's copy, out of a hand rerun's reach
        method_file = p.dir / "model" / "ftk_method.json"
        if method_file.is_file():  # ftk's trainer: class weights, trainable parameters
            st["method"] = json.loads(method_file.read_text(encoding="utf-8"))
        runs.write_manifest(run_dir, manifest)
        print(f"[ftk] stage {p.name} finished in {hms(seconds)}{_loss_summary(trainer_log)}; "
              f"model: {p.dir / 'model'}" + (f"; loss plot: {plot}" if plot else ""), flush=True)
    manifest.update({"status": "finished", "exit_code": 0,
                     "train_seconds": round(sum(s.get("seconds", 0) for s in manifest["stages"]), 2),
                     "ended": _dt.datetime.now().isoformat(timespec="seconds")})
    runs.write_manifest(run_dir, manifest)


def _loss_summary(trainer_log: Path) -> str:
    log = read_log(trainer_log)
    rows = [r for r in log if r.get("loss") is not None]
    if not rows:
        return ""
    steps = max(int(r.get("total_steps") or r["current_steps"]) for r in log)
    evals = [r["eval_loss"] for r in log if r.get("eval_loss") is not None]
    return (f", {steps} steps, loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}"
            + (f", eval_loss {evals[-1]:.4f}" if evals else ""))


def _data_line(stage_data: dict[str, dict], fits: dict[str, dict], recipe: Recipe) -> str:
    parts = []
    for name, m in stage_data.items():
        rows = ", ".join(f"{s} {info['rows']}" for s, info in m.get("splits", {}).items())
        fitted = sum(v.get("truncated", 0) for v in fits.get(name, {}).values())
        where = "" if len(stage_data) == 1 else f"{name}: "
        parts.append(f"{where}{rows} rows" + (f" ({fitted} cut to cutoff_len {recipe.train.cutoff_len})"
                                               if fitted else ""))
    return "[ftk] data: " + "; ".join(parts)


def train(recipe: Recipe, recipe_path: str | Path, overrides: list[str] | None = None, *,
          topo: Topology | None = None, slurm: bool = False, verbose: bool = False,
          extra_env: dict[str, str] | None = None) -> Path:
    """Run training for a checked recipe (ftk.validate) in a new run directory; return its path.

    Order: every stage's data (prepared atomically, before anything else is written) -> the tiny
    model if the recipe builds one -> the run directory, with copies of the task YAML and the
    prepared manifest -> launch.
    """
    stage_data, dataset_dirs, fits = {}, {}, {}
    for name, stage in recipe.stage_recipes():  # every stage's data before anything launches
        m = ensure_prepared(stage, recipe_path)
        if "train" not in m.get("splits", {}):
            raise FtkError("prepared data has no train split (set `data.train`)",
                           path=Path(stage.data.prepared_dir) / "manifest.json")
        stage_data[name] = m
    ensure_model(recipe)
    for name, stage in recipe.stage_recipes():
        if stage.method.trainer == "llamafactory":
            dataset_dirs[name], fits[name] = fit_for_training(stage, stage_data[name])
        else:  # ftk's trainer fits prompts (prompt tuning) or truncates inputs (heads) itself
            dataset_dirs[name], fits[name] = str(Path(stage.data.prepared_dir)), {}
    data_manifest = stage_data[name]  # the last stage's data, the one `ftk eval` uses
    run_dir = runs.new_run_dir(recipe.runs_dir, recipe.name)
    topo = _single_node_port(recipe, topo or Topology())
    plans = plan(recipe, run_dir, topo, dataset_dirs)
    for p in plans:
        _write_stage_files(p)
    (run_dir / "recipe.yaml").write_text(
        yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8")
    env = _env_for(recipe, run_dir, extra_env)
    manifest = _base_manifest(recipe, recipe_path, overrides, plans, env)
    manifest["data"] = data_manifest
    manifest["task"] = runs.keep_task_copy(run_dir, recipe.stage_recipes()[-1][1].task)
    write_json(run_dir / runs.DATA_MANIFEST, data_manifest)
    manifest["fit"] = fits[name]
    for st in manifest["stages"]:
        st["fit"] = fits[st["name"]]
    if len(stage_data) > 1:
        manifest["data_stages"] = stage_data
    print(f"[ftk] run directory: {run_dir}")
    print(_data_line(stage_data, fits, recipe), flush=True)
    if slurm:
        from ftk.train.slurm import submit, write_sbatch

        script = write_sbatch(recipe, plans, run_dir)
        manifest.update({"status": "written", "sbatch": str(script)})
        runs.write_manifest(run_dir, manifest)
        try:
            job = submit(script)
        except FtkError:  # refused: no job will ever use this folder
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        if job:  # the job itself records running / finished / failed (train/jobstate.py)
            manifest.update({"status": "submitted", "slurm_job_id": job, "submitted": runs.now()})
            runs.write_manifest(run_dir, manifest)
        return run_dir
    runs.write_manifest(run_dir, manifest)
    _run_stages(plans, manifest, run_dir, env, verbose=verbose)
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


def resume(run_dir: str | Path, topo: Topology | None = None, verbose: bool = False) -> Path:
    """Continue a run in place from the last checkpoint of its first unfinished stage."""
    run_dir = Path(run_dir)
    manifest, _, recipe = runs.read_run(run_dir)
    if manifest.get("status") == "finished":
        raise FtkError("run already finished; nothing to resume", path=run_dir)
    if runs.status_of(manifest) == "running":
        raise FtkError(f"run is still running (pid {manifest.get('pid')} on {manifest.get('host')})", path=run_dir)
    topo = _single_node_port(recipe, topo or Topology())
    dataset_dirs = {p.name: p.dataset_dir for p in plan(recipe, run_dir, topo)}
    for st in manifest["stages"]:  # the folder the run trained from (a fitted copy, perhaps)
        args = st.get("llamafactory_args") or st.get("trainer_args", {}).get("data", {})
        dataset_dirs[st["name"]] = args.get("dataset_dir", dataset_dirs.get(st["name"]))
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
    manifest["stages"][first].update({plans[first].args_key: plans[first].train_args, "argv": plans[first].argv})
    if first == len(plans) - 1:  # the top-level copy describes the last stage: keep it true
        manifest.update({plans[first].args_key: plans[first].train_args, "argv": plans[first].argv})
    manifest.update({"status": "running", **runs.process_identity()})
    runs.write_manifest(run_dir, manifest)
    print(f"[ftk] resuming {run_dir} from {ckpt}")
    _run_stages(plans, manifest, run_dir, env, first=first, verbose=verbose)
    return run_dir
