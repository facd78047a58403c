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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="stream the trainer's whole output too")] = False,
) -> None:
    """Render the LLaMA-Factory config into a new run directory and launch training.

    The terminal shows one progress line per stage; the trainer's own output goes to RUN/train.log
    (all of it with --verbose). On failure the end of train.log is printed and the exit code is
    the trainer's.

    Examples:\n
      ftk train configs/agnews_tiny_cpu.yaml\n
      ftk train configs/agnews_llama31_full.yaml --dry-run
    """
    from ftk.recipe import load_recipe
    from ftk.train import launch
    from ftk.train.plan import Topology
    from ftk.train.plan import dry_run as plan_dry_run
    from ftk.train.run import train
    from ftk.train.run import resume as resume_run
    from ftk.validate import check_for_training

    topo = Topology.from_env(node_rank, master_addr, master_port)
    if resume is not None:
        run_dir = resume_run(resume, topo, verbose=verbose)
        print(f"[ftk] trained: {run_dir}")
        return
    if recipe is None:
        raise FtkError("give a recipe (or --resume RUN)")
    if dry_run:
        r = load_recipe(recipe, overrides)
        import json

        for p in plan_dry_run(r, topo):
            print(f"# {p.dir}/{p.config_name}" + (f"  (stage {p.name})" if p.name != "main" else ""))
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
    r = check_for_training(recipe, overrides)
    run_dir = train(r, recipe, overrides, topo=topo, slurm=slurm, verbose=verbose)
    print(f"[ftk] {'prepared' if slurm else 'trained'}: {run_dir}")


@app.command("validate")
def validate_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value recipe overrides")] = None,
    skip_data: Annotated[bool, typer.Option("--skip-data", help="do not read the data files (they live "
                                            "on another machine)")] = False,
) -> None:
    """Check a recipe without training or writing anything: schema and ranges, the task, every data
    row, referenced files, SLURM values, LLaMA-Factory's own parser, template and dataset names.
    Every problem is reported at once, on one line (exit code 2).

    Examples:\n
      ftk validate configs/agnews_llama31_full.yaml\n
      ftk validate configs/agnews_tiny_cpu.yaml train.learning_rate=1e-4
    """
    from ftk.validate import validate_recipe

    report = validate_recipe(recipe, overrides, data="skip" if skip_data else "full")
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="stream LLaMA-Factory's whole output too")] = False,
    gguf: Annotated[bool, typer.Option("--gguf", help="also write the merged causal LM as one GGUF file + an Ollama "
                                       "Modelfile in RUN/gguf-<checkpoint> (or --out)")] = False,
    outtype: Annotated[str, typer.Option(help="with --gguf: f32, f16, bf16 or q8_0")] = "f16",
) -> None:
    """Merge a LoRA adapter into a full model (LLaMA-Factory export), from the chosen checkpoint;
    with --gguf, also one GGUF file for llama.cpp / Ollama (tokenizer and training chat template inside).

    Examples:\n
      ftk export runs/yelp_chatglm3_lora-20261121-101500\n
      ftk export runs/shopping_yi9b-20261121-101500 --checkpoint best\n
      ftk export runs/agnews_smollm2_lora-20261207-101500 --gguf --outtype q8_0
    """
    from ftk.train.export import ExportFailed, export, export_gguf

    try:
        if gguf:
            print(f"[ftk] exported: {export_gguf(run, checkpoint=checkpoint, outtype=outtype, out=out, verbose=verbose)}")
            return
        if outtype != "f16":
            raise FtkError("--outtype applies to --gguf only")
        print(f"[ftk] exported: {export(run, checkpoint=checkpoint, out=out, verbose=verbose)}")
    except ExportFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.code or 1) from None


@app.command("runs")
def runs_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="folder of run directories (or one run)")] = Path("runs"),
) -> None:
    """List runs: name, status (a run whose process is gone reads `interrupted`), steps, headline
    metric of its evaluations, path.

    Examples:\n
      ftk runs\n
      ftk runs /scratch/me/ftk-runs
    """
    from rich.console import Console
    from rich.table import Table

    from ftk.train.runs import list_runs

    rows = list_runs(runs_dir)
    table = Table(title=f"{len(rows)} run(s) in {runs_dir}")
    for col in ("name", "status", "steps", "metric", "started", "path"):
        table.add_column(col, justify="right" if col == "steps" else "left", overflow="fold")
    for r in rows:
        table.add_row(r["name"] or "?", r["status"], "" if r["steps"] is None else str(r["steps"]),
                      r["metric"] or "", r["started"] or "", r["path"])
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


@app.command("env")
def env_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """What a bug report needs: ftk, LLaMA-Factory, torch (+CUDA), transformers, peft, deepspeed,
    flash-attn and vLLM versions, the GPUs and their memory, and any known bad combination.

    Examples:\n
      ftk env\n
      ftk env --json > env.json
    """
    import json

    from ftk.train.environment import format_report, report

    r = report()
    print(json.dumps(r, indent=2) if as_json else format_report(r), end="\n" if as_json else "")


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
    from pydantic import ValidationError

    from ftk.data.sources import iter_lines
    from ftk.errors import format_validation_error
    from ftk.models.tiny import TinyModelSpec
    from ftk.train.tiny import build_tiny_model

    try:  # the recipe's model.tiny checks: sizes, heads dividing the width, before any work
        TinyModelSpec(hidden_size=hidden_size, layers=layers, heads=heads, kv_heads=kv_heads, vocab_size=vocab_size,
                      seed=seed)
    except ValidationError as exc:
        import re

        keys = r"`?\b(hidden_size|kv_heads|heads|layers|vocab_size|seed)\b`?(?=: )"  # the key leading each problem
        raise FtkError(re.sub(keys, lambda m: "--" + m.group(1).replace("_", "-"), format_validation_error(exc))) \
            from None
    for t in text:
        if not t.is_file():
            raise FtkError("text file not found", path=t)
    build_tiny_model(out, iter_lines(text), hidden_size=hidden_size, num_layers=layers, num_heads=heads,
                     num_kv_heads=kv_heads, vocab_size=vocab_size, seed=seed)
    print(f"tiny model: {out}")
