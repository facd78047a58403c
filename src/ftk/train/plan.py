"""Recipe -> the launch plan of each stage: LLaMA-Factory args, DeepSpeed JSON, argv.

Pure: nothing is written and nothing runs. `ftk train --dry-run` prints this plan; `ftk train`
writes it into the run directory and launches it (train/run.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ftk.data.prepare import load_manifest
from ftk.data.task import load_task
from ftk.recipe import Recipe
from ftk.train import deepspeed_presets, launch, llamafactory

CONFIG_NAME = "llamafactory.yaml"
DEEPSPEED_NAME = "deepspeed.json"


@dataclass
class StagePlan:
    name: str
    recipe: Recipe
    dir: Path  # where this stage's config file and model/ live
    train_args: dict  # the rendered config: LLaMA-Factory's YAML keys, or ftk's trainer.yaml
    deepspeed: dict | None
    argv: list[str]
    config_name: str = CONFIG_NAME  # llamafactory.yaml, or trainer.yaml for ftk's own trainer

    @property
    def trainer(self) -> str:
        return self.recipe.method.trainer

    @property
    def args_key(self) -> str:
        """The manifest key of the rendered config."""
        return "llamafactory_args" if self.trainer == "llamafactory" else "trainer_args"

    @property
    def dataset_dir(self) -> str:
        args = self.train_args
        return args["dataset_dir"] if self.trainer == "llamafactory" else args["data"]["dataset_dir"]

    def yaml_text(self) -> str:
        text = yaml.safe_dump(self.train_args, sort_keys=False, allow_unicode=True)
        if self.trainer != "llamafactory":
            return text
        return RERUN_NOTE + text


RERUN_NOTE = """\
# What ftk ran for this stage; LLaMA-Factory reads it as it is. To rerun it by hand, give it a new
# output folder:   llamafactory-cli train THIS_FILE output_dir=NEW_FOLDER
# (in this run's folder LLaMA-Factory would resume from the last checkpoint and rewrite model/'s
# result files; ftk keeps its own copy of them in results/ and their sha256 in manifest.json).
"""


@dataclass
class Topology:
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @classmethod
    def from_env(cls, node_rank=None, master_addr=None, master_port=None) -> Topology:
        """Flags win over NODE_RANK / MASTER_ADDR / MASTER_PORT from the environment."""
        env = os.environ
        return cls(
            node_rank=int(node_rank if node_rank is not None else env.get("NODE_RANK", 0)),
            master_addr=master_addr or env.get("MASTER_ADDR"),
            master_port=int(master_port) if master_port else (int(env["MASTER_PORT"]) if env.get("MASTER_PORT") else None),
        )


def chain(recipe: Recipe, run_dir: Path) -> list[tuple[str, Recipe, Path]]:
    """(name, stage recipe, stage dir); each stage after the first starts from the one before."""
    stages = recipe.stage_recipes()
    if len(stages) == 1:
        return [(stages[0][0], stages[0][1], run_dir)]
    out = []
    prev_dir: Path | None = None
    for i, (name, r) in enumerate(stages, 1):
        sdir = run_dir / f"stage{i}-{name}"
        if prev_dir is not None:
            prev_model = str(prev_dir / "model")
            if r.method.finetuning_type == "lora":
                r = r.model_copy(update={"model": r.model.model_copy(update={"adapter_name_or_path": prev_model})})
            else:
                r = r.model_copy(update={"model": r.model.model_copy(update={"name_or_path": prev_model,
                                                                              "tiny": None})})
        out.append((name, r, sdir))
        prev_dir = sdir
    return out


def plan_stage(name: str, recipe: Recipe, stage_dir: Path, data_manifest: dict | None, topo: Topology,
               resume_from: str | None = None, dataset_dir: str | None = None) -> StagePlan:
    """One stage's plan; `dataset_dir` replaces the prepared folder (a fitted copy, train/prompts.py)."""
    splits = (data_manifest or {}).get("splits", {})
    d = recipe.distributed
    ds_cfg, ds_path = None, None
    if d.deepspeed:
        ds_cfg = deepspeed_presets.deepspeed_config(d.deepspeed)
        ds_path = str(stage_dir / DEEPSPEED_NAME)
    elif d.deepspeed_config:
        ds_path = d.deepspeed_config
    dataset_dir = dataset_dir or str(Path(recipe.data.prepared_dir))
    with_eval = bool(recipe.train.eval_steps and "validation" in splits)
    if recipe.method.trainer == "ftk":
        from ftk.train.hf import config as hf

        prefix = None if splits else load_task(recipe.task).name
        task = load_task(recipe.task) if data_manifest else None
        prompt = task.prompt(data_manifest.get("prompt_version")) if task else None
        args = hf.render_trainer_config(
            recipe, task_file=str(stage_dir / "task.yaml"), dataset_dir=dataset_dir,
            train_file=str(Path(dataset_dir) / splits.get("train", {}).get("file", f"{prefix}_train.jsonl")),
            eval_file=str(Path(dataset_dir) / splits["validation"]["file"]) if with_eval else None,
            output_dir=str(stage_dir / "model"), prompt_template=prompt,
            class_weights=hf.class_weights_for(recipe, data_manifest), deepspeed_path=ds_path,
            resume_from_checkpoint=resume_from)
        config_name, module = hf.CONFIG_NAME, hf.ENTRY_MODULE
    else:
        prefix = None if "train" in splits else load_task(recipe.task).name
        train_ds = splits["train"]["dataset"] if "train" in splits else f"{prefix}_train"
        args = llamafactory.render_train_args(
            recipe, dataset_dir=dataset_dir, train_dataset=train_ds, output_dir=str(stage_dir / "model"),
            eval_dataset=splits["validation"]["dataset"] if with_eval else None, deepspeed_path=ds_path,
            resume_from_checkpoint=resume_from)
        config_name, module = CONFIG_NAME, launch.LAUNCHER_MODULE
    argv = launch.build_train_argv(
        str(stage_dir / config_name), nnodes=d.nnodes, nproc_per_node=d.nproc_per_node,
        node_rank=topo.node_rank, master_addr=topo.master_addr or d.master_addr,
        master_port=topo.master_port or d.master_port, force_torchrun=ds_path is not None, module=module)
    return StagePlan(name, recipe, stage_dir, args, ds_cfg, argv, config_name)


def plan(recipe: Recipe, run_dir: Path, topo: Topology | None = None,
         dataset_dirs: dict[str, str] | None = None) -> list[StagePlan]:
    """Every stage's plan; `dataset_dirs` maps a stage name to the folder LLaMA-Factory reads."""
    topo = topo or Topology()
    out = []
    for name, r, sdir in chain(recipe, run_dir):
        prepared = Path(r.data.prepared_dir) / "manifest.json"
        manifest = load_manifest(r.data.prepared_dir) if prepared.exists() else None
        out.append(plan_stage(name, r, sdir, manifest, topo, dataset_dir=(dataset_dirs or {}).get(name)))
    return out


def dry_run(recipe: Recipe, topo: Topology | None = None) -> list[StagePlan]:
    return plan(recipe, Path(recipe.runs_dir) / f"{recipe.name}-<timestamp>", topo)
