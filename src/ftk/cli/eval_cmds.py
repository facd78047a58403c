"""Eval-stage commands: eval, baseline, compare, embed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ftk.cli.app import app
from ftk.errors import FtkError


@app.command("eval")
def eval_cmd(
    run: Annotated[Optional[Path], typer.Argument(help="run directory made by `ftk train` (with --base: a recipe)")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="with --base: key=value recipe overrides")] = None,
    base: Annotated[bool, typer.Option("--base", help="evaluate the recipe's model before any training")] = False,
    shots: Annotated[Optional[int], typer.Option(min=1, help="with --base: K in-context examples from the train split "
                                                 "(seeded, balanced across labels) before every item")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="evaluate this saved checkpoint (its step)")] = None,
    checkpoints: Annotated[Optional[str], typer.Option(help="all or STEP,STEP,...: a curve over saved checkpoints")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default RUN/eval-<split>)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="generation batch size")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="only the first N examples")] = None,
    split: Annotated[Optional[str], typer.Option(help="prepared split to evaluate (default test)")] = None,
    predictions: Annotated[Optional[Path], typer.Option(help="score this predictions file instead of generating")] = None,
    task: Annotated[Optional[str], typer.Option(help="task of --predictions")] = None,
    data: Annotated[Optional[Path], typer.Option(help="prepared folder whose split holds the gold labels")] = None,
    mode: Annotated[Optional[str], typer.Option(help="generate (greedy text) or choice (label likelihoods)")] = None,
    engine: Annotated[str, typer.Option(help="hf (default), vllm (GPU nodes) or openai (a model behind an "
                                        "OpenAI-compatible server: --base-url, --model)")] = "hf",
    base_url: Annotated[Optional[str], typer.Option(help="--engine openai: the server, e.g. http://127.0.0.1:8080/v1")] = None,
    model: Annotated[Optional[str], typer.Option(help="--engine openai: the served model's name")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="--engine openai: environment variable holding the API "
                                                       "key (never written anywhere)")] = None,
    api: Annotated[str, typer.Option(help="--engine openai: completions (ftk renders the recipe's template), chat "
                                     "(the server's template) or auto (completions when the tokenizer is here)")] = "auto",
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="--engine openai: requests in flight")] = 4,
    timeout: Annotated[float, typer.Option(min=1, help="--engine openai: seconds one request may take (the client "
                                           "retries 429 / 5xx / timeouts twice)")] = 120.0,
    shards: Annotated[Optional[int], typer.Option(min=1, help="data-parallel processes (default: one per visible GPU)")] = None,
    shard: Annotated[Optional[str], typer.Option(hidden=True, help="internal: I/N worker of a sharded eval")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="remove ftk's earlier outputs from the output folder "
                                        "first (predictions are otherwise reused when the same model, mode, "
                                        "prompts and data made them)")] = False,
) -> None:
    """Greedy batched generation on the test split, label extraction, metrics and reports.
    With --predictions, score an existing file (ftk's or LLaMA-Factory's generated_predictions.jsonl);
    with --base, the recipe's untrained model; with --checkpoints, a curve over saved checkpoints.

    Examples:\n
      ftk eval runs/agnews_tiny_cpu-20261121-101500\n
      ftk eval configs/agnews_tiny_cpu.yaml --base --mode choice\n
      ftk eval configs/agnews_tiny_cpu.yaml --base --mode choice --shots 8\n
      ftk eval runs/agnews_tiny_cpu-20261121-101500 --checkpoints all\n
      ftk eval runs/agnews_tiny_cpu-20261121-101500 --engine openai --base-url http://127.0.0.1:8080/v1 --model m\n
      ftk eval configs/agnews_tiny_cpu.yaml --base --engine openai --base-url https://api.openai.com/v1
      --model gpt-4o-mini --api-key-env OPENAI_API_KEY
    """
    from ftk.eval.evaluate import evaluate_predictions, evaluate_run
    from ftk.eval.report import print_table

    if split is not None and split not in ("train", "validation", "test"):
        raise FtkError(f"--split {split!r}: expected train, validation or test")
    served = None
    if engine == "openai":
        if not base_url or not model:
            raise FtkError("--engine openai needs --base-url URL and --model NAME")
        if predictions is not None or checkpoints is not None:
            raise FtkError("--engine openai asks a served model: not with --predictions or --checkpoints")
        from ftk.eval.served import ServedModel, check_served

        served = ServedModel(base_url=base_url, model=model, api_key_env=api_key_env, api=api,
                             concurrency=concurrency, timeout=timeout)
        check_served(served)
    elif base_url or model or api_key_env or api != "auto":
        raise FtkError("--base-url, --model, --api-key-env and --api go with --engine openai")
    if overrides and not base:
        raise FtkError(f"unexpected argument {overrides[0]!r} (key=value overrides go with --base RECIPE)")
    if shots is not None and (predictions is not None or checkpoints is not None):
        raise FtkError("--shots gives a base model in-context examples: use it with --base RECIPE")
    if base:
        if run is None or predictions is not None or checkpoint or checkpoints:
            raise FtkError("--base takes a recipe (and key=value overrides), without --predictions or checkpoints")
        from ftk.eval.base import make_base_run
        from ftk.validate import check_for_training

        recipe = check_for_training(run, overrides)
        run = make_base_run(recipe, run, overrides)
        print(f"[ftk] base model run: {run}")
    if checkpoints is not None:
        if run is None or checkpoint:
            raise FtkError("--checkpoints takes a run directory (and no --checkpoint)")
        from ftk.study.curves import checkpoint_curve, print_curve

        table, out_dir = checkpoint_curve(run, checkpoints, split=split, mode=mode, batch_size=batch_size,
                                          limit=limit, engine=engine, fresh=fresh)
        print_curve(table)
        print(f"reports: {out_dir}")
        return
    if predictions is not None:
        if not task or not out:
            raise FtkError("--predictions needs --task and --out")
        if run is not None:
            raise FtkError("give a run directory or --predictions, not both")
        metrics, out_dir = evaluate_predictions(predictions, task, out, data_dir=data, split=split or "test")
    elif run is not None:
        metrics, out_dir = evaluate_run(run, out_dir=out, batch_size=batch_size, limit=limit, split=split,
                                        mode=mode, engine=engine, shards=shards, shard=shard, checkpoint=checkpoint,
                                        fresh=fresh, shots=shots, served=served)
        if shard is not None:
            return
    else:
        raise FtkError("give a run directory, or --predictions FILE --task TASK --out DIR")
    print_table(metrics)
    print(f"reports: {out_dir}")


@app.command("baseline")
def baseline_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML (its task, data and eval split)")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value recipe overrides")] = None,
    method: Annotated[str, typer.Option(help="tfidf (TF-IDF + logistic regression, chosen by cross-validation "
                                        "on the train split) or majority (the train split's majority label; "
                                        "all-O for NER)")] = "tfidf",
    out: Annotated[Optional[Path], typer.Option(help="output folder (default <runs_dir>/<name>-baseline/eval-<split>, "
                                                "or <name>-majority/...)")] = None,
    split: Annotated[Optional[str], typer.Option(help="prepared split to score (default the recipe's eval split)")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="only the first N examples")] = None,
) -> None:
    """The bars to clear, fitted on the recipe's prepared train split only and scored like any model
    on its eval split: TF-IDF + logistic regression with its configuration chosen by 5-fold
    cross-validation (printed with its CV score), or the majority label.

    Examples:\n
      ftk baseline configs/disaster_llama3_clshead_lora_tiny.yaml\n
      ftk baseline configs/agnews_tiny_real.yaml --limit 2000\n
      ftk baseline configs/bionlp_gptneo_tokencls_lora_tiny.yaml --method majority
    """
    from ftk.eval.baseline import check_baseline, run_baseline
    from ftk.eval.report import print_table
    from ftk.recipe import load_recipe
    from ftk.validate import check_for_prepare

    if split is not None and split not in ("train", "validation", "test"):
        raise FtkError(f"--split {split!r}: expected train, validation or test")
    check_baseline(load_recipe(recipe, overrides), recipe, method)  # before any data is read
    r = check_for_prepare(recipe, overrides)
    metrics, out_dir = run_baseline(method, r, recipe, out_dir=out, split=split, limit=limit)
    if metrics.get("chosen"):
        cv = metrics["cv"]
        print(f"chosen by {cv['folds']}-fold CV on the train split ({cv['scoring']} {cv['score']:.4f}): "
              + ", ".join(f"{k}={v}" for k, v in metrics["chosen"].items()))
    elif metrics.get("what"):
        print(f"baseline: {metrics['what']}")
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
    from ftk.eval.compare import compare, compare_markdown
    from ftk.fileio import write_json, write_text

    result = compare(a, b)
    md = compare_markdown(result)
    print(md, end="")
    if out:
        write_json(out / "compare.json", result)
        write_text(out / "compare.md", md)


@app.command("embed")
def embed_cmd(
    run: Annotated[Path, typer.Argument(help="run directory made by `ftk train`")],
    split: Annotated[Optional[str], typer.Option(help="prepared split (default the recipe's eval split)")] = None,
    limit: Annotated[Optional[int], typer.Option(min=10, help="only the first N rows")] = None,
    seed: Annotated[int, typer.Option(min=0, help="t-SNE seed")] = 0,
) -> None:
    """Last-token hidden states of the test prompts, t-SNE (scikit-learn), coloured by gold label and by
    correct / wrong (from the run's evaluation of the split).

    Examples:\n
      ftk embed runs/agnews_tiny_cpu-20261121-101500\n
      ftk embed runs/agnews_llama31_full-20261121-101500 --limit 2000
    """
    from ftk.eval.embed import embed_run

    out = embed_run(run, split=split, limit=limit, seed=seed)
    for name in ("tsne_by_label.png", "tsne_by_correct.png", "points.csv"):
        if (out / name).exists():
            print(f"{out / name}")
