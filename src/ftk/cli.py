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
    prompt_version: Annotated[Optional[str], typer.Option(help="prompt version of the task")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling and splits")] = 42,
    val_size: Annotated[Optional[float], typer.Option(help="fraction (<1) or count split off train")] = None,
    skip_malformed: Annotated[bool, typer.Option(help="drop malformed rows and count them instead of failing")] = False,
) -> None:
    """Turn raw data into LLaMA-Factory files + dataset_info.json + manifest.json.

    Examples:\n
      ftk prepare configs/agnews_tiny_cpu.yaml\n
      ftk prepare --task agnews --test ../shared/realdata/ag_news/test.csv --out data/prepared/agnews_real
    """
    from ftk.prepare import prepare
    from ftk.tasks import load_task

    if recipe is not None:
        from ftk.recipe import load_recipe

        r = load_recipe(recipe, overrides)
        task_spec = load_task(task or r.task)
        sources = r.data.sources()
        out_dir = out or Path(r.data.prepared_dir)
        kwargs = dict(prompt_version=prompt_version or r.data.prompt_version, seed=r.data.seed,
                      max_samples=r.data.max_samples, val_size=val_size or r.data.val_size,
                      source_format=r.data.source_format)
    else:
        if not task or not out:
            raise FtkError("give a recipe, or --task and --out with at least one of --train/--validation/--test")
        task_spec = load_task(task)
        sources = {k: v for k, v in (("train", train), ("validation", validation), ("test", test)) if v}
        out_dir = out
        kwargs = dict(prompt_version=prompt_version, seed=seed,
                      val_size=(int(val_size) if val_size and val_size >= 1 else val_size))
    manifest = prepare(task_spec, sources, out_dir, skip_malformed=skip_malformed, **kwargs)
    for split, info in manifest["splits"].items():
        if split not in sources and not (split == "validation" and kwargs.get("val_size")):
            continue
        counts = ", ".join(f"{k} {v}" for k, v in info["label_counts"].items())
        mal = info["malformed"]["count"]
        print(f"{split}: {info['rows']} rows -> {out_dir / info['file']} [{info['dataset']}] ({counts})"
              + (f"; {mal} malformed rows dropped" if mal else ""))
    print(f"manifest: {out_dir / 'manifest.json'}")


@app.command("train")
def train_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value recipe overrides")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the rendered YAML and launch command only")] = False,
) -> None:
    """Render the LLaMA-Factory config into a new run directory and launch training.

    Examples:\n
      ftk train configs/agnews_tiny_cpu.yaml\n
      ftk train configs/agnews_llama31_full.yaml --dry-run
    """
    from ftk import launch
    from ftk.recipe import load_recipe
    from ftk.train import TrainingFailed, dry_run as plan_dry_run, train

    r = load_recipe(recipe, overrides)
    if dry_run:
        p = plan_dry_run(r)
        print(f"# {p.run_dir}/llamafactory.yaml")
        print(p.yaml_text(), end="")
        if p.deepspeed:
            import json

            print(f"# {p.run_dir}/deepspeed.json")
            print(json.dumps(p.deepspeed, indent=2))
        print("# launch")
        print(launch.shell_quote(p.argv))
        return
    try:
        run_dir = train(r, recipe, overrides)
    except TrainingFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"[ftk] trained: {run_dir}")


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
        metrics, out_dir = evaluate_run(run, out_dir=out, batch_size=batch_size, limit=limit, split=split)
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
