"""Train-stage commands: train, validate, schema, export, tiny-model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ftk.cli.app import app
from ftk.errors import FtkError


@app.command("train")
def train_cmd(
    recipe: Annotated[Optional[Path], typer.Argument(help="recipe YAML")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value recipe overrides")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the rendered YAML and launch command only")] = False,
    slurm: Annotated[bool, typer.Option("--slurm", help="write an sbatch script (and submit it if sbatch exists)")] = False,
    resume: Annotated[Optional[Path], typer.Option(help="continue this run directory from its last checkpoint")] = None,
    node_rank: Annotated[Optional[int], typer.Option(help="this node's rank (default $NODE_RANK or 0)")] = None,
    master_addr: Annotated[Optional[str], typer.Option(help="rank-0 node address (default $MASTER_ADDR)")] = None,
    master_port: Annotated[Optional[int], typer.Option(help="rendezvous port (default $MASTER_PORT)")] = None,
) -> None:
    """Render the LLaMA-Factory config into a new run directory and launch training.

    Examples:\n
      ftk train configs/agnews_tiny_cpu.yaml\n
      ftk train configs/agnews_llama31_full.yaml --dry-run
    """
    from ftk.recipe import load_recipe
    from ftk.train import launch
    from ftk.train.plan import Topology
    from ftk.train.plan import dry_run as plan_dry_run
    from ftk.train.run import TrainingFailed, train
    from ftk.train.run import resume as resume_run

    topo = Topology.from_env(node_rank, master_addr, master_port)
    try:
        if resume is not None:
            run_dir = resume_run(resume, topo)
            print(f"[ftk] trained: {run_dir}")
            return
        if recipe is None:
            raise FtkError("give a recipe (or --resume RUN)")
        r = load_recipe(recipe, overrides)
        if dry_run:
            import json

            for p in plan_dry_run(r, topo):
                print(f"# {p.dir}/llamafactory.yaml" + (f"  (stage {p.name})" if p.name != "main" else ""))
                print(p.yaml_text(), end="")
                if p.deepspeed:
                    print(f"# {p.dir}/deepspeed.json")
                    print(json.dumps(p.deepspeed, indent=2))
                print("# launch")
                print(launch.shell_quote(p.argv))
            if slurm:
                from ftk.train.slurm import render_sbatch

                print("# sbatch.sh")
                print(render_sbatch(r, plan_dry_run(r, topo), Path(r.runs_dir) / f"{r.name}-<timestamp>"), end="")
            return
        run_dir = train(r, recipe, overrides, topo=topo, slurm=slurm)
    except TrainingFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"[ftk] {'prepared' if slurm else 'trained'}: {run_dir}")


@app.command("validate")
def validate_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value recipe overrides")] = None,
) -> None:
    """Check a recipe without training: schema, task, data files, LLaMA-Factory's own parser,
    template and dataset names. Every problem is reported at once (exit code 2).

    Examples:\n
      ftk validate configs/agnews_llama31_full.yaml\n
      ftk validate configs/agnews_tiny_cpu.yaml train.learning_rate=1e-4
    """
    from ftk.validate import validate

    report = validate(recipe, overrides)
    for note in report.notes:
        print(f"note: {note}")
    print(f"{recipe}: OK")


@app.command("schema")
def schema_cmd() -> None:
    """Print the recipe JSON Schema (for editors and CI).

    Examples:\n
      ftk schema > recipe.schema.json\n
      ftk schema | python -m json.tool | less
    """
    import json

    from ftk.recipe import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="run directory made by `ftk train`")],
    checkpoint: Annotated[str, typer.Option(help="last, best (lowest eval loss) or a step number")] = "last",
    out: Annotated[Optional[Path], typer.Option(help="export folder (default RUN/export-<checkpoint>)")] = None,
) -> None:
    """Merge a LoRA adapter into a full model (LLaMA-Factory export), from the chosen checkpoint.

    Examples:\n
      ftk export runs/yelp_chatglm3_lora-20261121-101500\n
      ftk export runs/shopping_yi9b-20261121-101500 --checkpoint best
    """
    from ftk.train.export import export

    print(f"[ftk] exported: {export(run, checkpoint=checkpoint, out=out)}")


@app.command("tiny-model")
def tiny_model_cmd(
    out: Annotated[Path, typer.Argument(help="output folder for the model and tokenizer")],
    text: Annotated[list[Path], typer.Option(help="text file(s) to train the tokenizer on (repeatable)")],
    hidden_size: Annotated[int, typer.Option(help="hidden size")] = 128,
    layers: Annotated[int, typer.Option(help="number of layers")] = 2,
    heads: Annotated[int, typer.Option(help="attention heads")] = 4,
    kv_heads: Annotated[int, typer.Option(help="key/value heads")] = 2,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size")] = 4096,
    seed: Annotated[int, typer.Option(help="init seed")] = 0,
) -> None:
    """Build a random-init LLaMA-architecture model + byte-level BPE tokenizer (llama3 template).

    Examples:\n
      ftk tiny-model data/models/tiny --text data/synth/agnews/train.csv\n
      ftk tiny-model data/models/tiny256 --text ../shared/realdata/ag_news/train_head2000.csv --hidden-size 256 --layers 4
    """
    from ftk.data.sources import iter_lines
    from ftk.train.tiny import build_tiny_model

    for t in text:
        if not t.is_file():
            raise FtkError("text file not found", path=t)
    build_tiny_model(out, iter_lines(text), hidden_size=hidden_size, num_layers=layers, num_heads=heads,
                     num_kv_heads=kv_heads, vocab_size=vocab_size, seed=seed)
    print(f"tiny model: {out}")
