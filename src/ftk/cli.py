"""The `ftk` command line. The only module that imports Typer: each command parses, calls one
function, prints. User errors (`FtkError`) print one line and exit with code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ftk.errors import EXIT_USER_ERROR, FtkError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Config-driven fine-tuning of LLMs for text classification, on LLaMA-Factory.")


@app.command("prepare")
def prepare_cmd(
    recipe: Annotated[Optional[Path], typer.Argument(help="recipe YAML (uses its `data` and `task`)")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value recipe overrides")] = None,
    task: Annotated[Optional[str], typer.Option(help="task name or task YAML (instead of a recipe)")] = None,
    train: Annotated[Optional[str], typer.Option(help="train split: file or hub:<id>[:<split>]")] = None,
    validation: Annotated[Optional[str], typer.Option(help="validation split source")] = None,
    test: Annotated[Optional[str], typer.Option(help="test split source")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder")] = None,
    source_format: Annotated[Optional[str], typer.Option("--format", help="task source format (default by suffix)")] = None,
    prompt_version: Annotated[Optional[str], typer.Option(help="prompt version of the task")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling and splits")] = 42,
    max_samples: Annotated[Optional[list[str]], typer.Option(help="SPLIT=N seeded sample (repeatable)")] = None,
    sample_strategy: Annotated[str, typer.Option(help="uniform or stratified")] = "uniform",
    val_size: Annotated[Optional[float], typer.Option(help="fraction (<1) or count split off train")] = None,
    test_size: Annotated[Optional[float], typer.Option(help="fraction (<1) or count split off train for test")] = None,
    drop_overlap: Annotated[bool, typer.Option(help="drop train rows whose input is in validation/test")] = False,
    skip_malformed: Annotated[bool, typer.Option(help="drop malformed rows and count them instead of failing")] = False,
    strict: Annotated[bool, typer.Option(help="fail on the first malformed row and on train/test overlap")] = False,
) -> None:
    """Turn raw data into LLaMA-Factory files + dataset_info.json + manifest.json.

    Examples:\n
      ftk prepare configs/agnews_tiny_cpu.yaml\n
      ftk prepare --task agnews --test ../shared/realdata/ag_news/test.csv --out data/prepared/agnews_real
    """
    from ftk.prepare import prepare, prepare_recipe
    from ftk.tasks import load_task

    def size(x: float | None) -> float | int | None:
        return int(x) if x is not None and x >= 1 else x

    if recipe is not None:
        from ftk.recipe import load_recipe

        r = load_recipe(recipe, overrides)
        out_dir = Path(r.data.prepared_dir)
        manifest = prepare_recipe(r, strict=strict, skip_malformed=skip_malformed)
    else:
        if not task or not out:
            raise FtkError("give a recipe, or --task and --out with at least one of --train/--validation/--test")
        samples = {}
        for item in max_samples or []:
            split, sep, n = item.partition("=")
            if not sep or not n.isdigit():
                raise FtkError(f"--max-samples {item!r}: expected SPLIT=N")
            samples[split] = int(n)
        sources = {k: v for k, v in (("train", train), ("validation", validation), ("test", test)) if v}
        out_dir = out
        manifest = prepare(load_task(task), sources, out, prompt_version=prompt_version, seed=seed,
                           max_samples=samples, sample_strategy=sample_strategy, val_size=size(val_size),
                           test_size=size(test_size), drop_overlap=drop_overlap, source_format=source_format,
                           strict=strict, skip_malformed=skip_malformed)
    for split, info in manifest["splits"].items():
        counts = info.get("label_counts") or info.get("entity_counts") or {}
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        extra = [f"{v} {k}" for k, v in info.get("cleaning", {}).items() if v]
        if info["malformed"]["count"]:
            extra.append(f"{info['malformed']['count']} malformed dropped")
        print(f"{split}: {info['rows']} rows -> {out_dir / info['file']} [{info['dataset']}]"
              + (f" ({shown})" if shown else "") + (f"; removed: {', '.join(extra)}" if extra else ""))
    print(f"manifest: {out_dir / 'manifest.json'}")


tasks_app = typer.Typer(help="List built-in tasks or show one.", invoke_without_command=True)
app.add_typer(tasks_app, name="tasks")


@tasks_app.callback()
def tasks_list(ctx: typer.Context) -> None:
    """List the built-in tasks (name, kind, labels, prompt versions).

    Examples:\n
      ftk tasks\n
      ftk tasks show agnews
    """
    if ctx.invoked_subcommand is not None:
        return
    from ftk.tasks import builtin_tasks, load_task

    for name in builtin_tasks():
        t = load_task(name)
        labels = ", ".join(t.labels) if t.labels else "-"
        print(f"{t.name:22} {t.kind:20} labels: {labels}  | prompts: {', '.join(t.prompts.versions)}"
              f" | formats: {', '.join(t.sources)}")


@tasks_app.command("show")
def tasks_show(
    task: Annotated[str, typer.Argument(help="task name or task YAML path")],
    data: Annotated[Optional[Path], typer.Option(help="prepared folder: show its first record per split")] = None,
    file: Annotated[Optional[str], typer.Option(help="a raw source file: show its first example")] = None,
    prompt_version: Annotated[Optional[str], typer.Option(help="prompt version")] = None,
) -> None:
    """Render one example prompt and target per split (from prepared data, a raw file, or placeholders).

    Examples:\n
      ftk tasks show agnews --file ../shared/realdata/ag_news/test.csv\n
      ftk tasks show bionlp2004 --data data/prepared/bionlp
    """
    from ftk.tasks_show import show

    print(show(task, data=data, file=file, prompt_version=prompt_version), end="")


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
    from ftk import launch
    from ftk.recipe import load_recipe
    from ftk.train import Topology, TrainingFailed, dry_run as plan_dry_run, resume as resume_run, train

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
                from ftk.slurm import render_sbatch

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


@app.command("eval")
def eval_cmd(
    run: Annotated[Optional[Path], typer.Argument(help="run directory made by `ftk train`")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default RUN/eval-<split>)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="generation batch size")] = None,
    limit: Annotated[Optional[int], typer.Option(help="only the first N examples")] = None,
    split: Annotated[Optional[str], typer.Option(help="prepared split to evaluate (default test)")] = None,
    predictions: Annotated[Optional[Path], typer.Option(help="score this predictions file instead of generating")] = None,
    task: Annotated[Optional[str], typer.Option(help="task of --predictions")] = None,
    data: Annotated[Optional[Path], typer.Option(help="prepared folder whose split holds the gold labels")] = None,
    mode: Annotated[Optional[str], typer.Option(help="generate (greedy text) or choice (label likelihoods)")] = None,
    engine: Annotated[str, typer.Option(help="hf (default) or vllm (GPU nodes)")] = "hf",
    shards: Annotated[Optional[int], typer.Option(help="data-parallel processes (default: one per visible GPU)")] = None,
    shard: Annotated[Optional[str], typer.Option(hidden=True, help="internal: I/N worker of a sharded eval")] = None,
) -> None:
    """Greedy batched generation on the test split, label extraction, metrics and reports.
    With --predictions, score an existing file (ftk's or LLaMA-Factory's generated_predictions.jsonl).

    Examples:\n
      ftk eval runs/agnews_tiny_cpu-20261121-101500\n
      ftk eval --predictions generated_predictions.jsonl --task agnews --data data/prepared/agnews --out eval_lf
    """
    from ftk.evaluate import evaluate_predictions, evaluate_run
    from ftk.report import print_table

    if predictions is not None:
        if not task or not out:
            raise FtkError("--predictions needs --task and --out")
        metrics, out_dir = evaluate_predictions(predictions, task, out, data_dir=data, split=split or "test")
    elif run is not None:
        if mode not in (None, "generate", "choice"):
            raise FtkError(f"--mode {mode!r}: expected generate or choice")
        if engine not in ("hf", "vllm"):
            raise FtkError(f"--engine {engine!r}: expected hf or vllm")
        metrics, out_dir = evaluate_run(run, out_dir=out, batch_size=batch_size, limit=limit, split=split,
                                        mode=mode, engine=engine, shards=shards, shard=shard)
        if shard is not None:
            return
    else:
        raise FtkError("give a run directory, or --predictions FILE --task TASK --out DIR")
    print_table(metrics)
    print(f"reports: {out_dir}")


@app.command("compare")
def compare_cmd(
    a: Annotated[Path, typer.Argument(help="run or eval folder A (e.g. the base model)")],
    b: Annotated[Path, typer.Argument(help="run or eval folder B (e.g. the fine-tuned model)")],
    out: Annotated[Optional[Path], typer.Option(help="also write compare.md and compare.json here")] = None,
) -> None:
    """Metrics of two evaluations side by side, with McNemar and paired-bootstrap tests.

    Examples:\n
      ftk compare runs/base/eval-test runs/agnews_tiny_cpu-20261121-101500\n
      ftk compare runs/a runs/b --out reports/a_vs_b
    """
    from ftk.compare import compare, compare_markdown
    from ftk.fileio import write_json, write_text

    result = compare(a, b)
    md = compare_markdown(result)
    print(md, end="")
    if out:
        write_json(out / "compare.json", result)
        write_text(out / "compare.md", md)


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
    from ftk.export import export

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
    from ftk.sources import iter_lines
    from ftk.tiny import build_tiny_model

    for t in text:
        if not t.is_file():
            raise FtkError("text file not found", path=t)
    build_tiny_model(out, iter_lines(text), hidden_size=hidden_size, num_layers=layers, num_heads=heads,
                     num_kv_heads=kv_heads, vocab_size=vocab_size, seed=seed)
    print(f"tiny model: {out}")


@app.command("synth")
def synth_cmd(
    out: Annotated[Path, typer.Argument(help="output folder for train.csv and test.csv")],
    n_train: Annotated[int, typer.Option(help="train rows")] = 2000,
    n_test: Annotated[int, typer.Option(help="test rows")] = 400,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    noise: Annotated[float, typer.Option(help="share of words drawn from other topics")] = 0.15,
) -> None:
    """Write a seeded synthetic 4-topic news dataset in the canonical AG News CSV layout.

    Examples:\n
      ftk synth data/synth/agnews\n
      ftk synth data/synth/agnews_big --n-train 20000 --n-test 2000 --seed 1
    """
    from ftk.synth import write_dataset

    paths = write_dataset(out, n_train=n_train, n_test=n_test, seed=seed, noise=noise)
    for split, p in paths.items():
        print(f"{split}: {p}")


@app.command("demo")
def demo_cmd(
    recipe: Annotated[Path, typer.Option(help="recipe to run")] = Path("configs/agnews_tiny_cpu.yaml"),
) -> None:
    """Offline end to end: synthetic AG News -> tiny model -> prepare -> train -> eval.

    Examples:\n
      ftk demo\n
      make demo
    """
    from ftk.demo import run_demo
    from ftk.train import TrainingFailed

    try:
        run_demo(str(recipe))
    except TrainingFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def main() -> None:
    try:
        app()
    except FtkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
