"""Eval-stage commands: eval, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ftk.cli.app import app
from ftk.errors import FtkError


@app.command("eval")
def eval_cmd(
    run: Annotated[Optional[Path], typer.Argument(help="run directory made by `ftk train`")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default RUN/eval-<split>)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="generation batch size")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="only the first N examples")] = None,
    split: Annotated[Optional[str], typer.Option(help="prepared split to evaluate (default test)")] = None,
    predictions: Annotated[Optional[Path], typer.Option(help="score this predictions file instead of generating")] = None,
    task: Annotated[Optional[str], typer.Option(help="task of --predictions")] = None,
    data: Annotated[Optional[Path], typer.Option(help="prepared folder whose split holds the gold labels")] = None,
    mode: Annotated[Optional[str], typer.Option(help="generate (greedy text) or choice (label likelihoods)")] = None,
    engine: Annotated[str, typer.Option(help="hf (default) or vllm (GPU nodes)")] = "hf",
    shards: Annotated[Optional[int], typer.Option(min=1, help="data-parallel processes (default: one per visible GPU)")] = None,
    shard: Annotated[Optional[str], typer.Option(hidden=True, help="internal: I/N worker of a sharded eval")] = None,
) -> None:
    """Greedy batched generation on the test split, label extraction, metrics and reports.
    With --predictions, score an existing file (ftk's or LLaMA-Factory's generated_predictions.jsonl).

    Examples:\n
      ftk eval runs/agnews_tiny_cpu-20261121-101500\n
      ftk eval --predictions generated_predictions.jsonl --task agnews --data data/prepared/agnews --out eval_lf
    """
    from ftk.eval.evaluate import evaluate_predictions, evaluate_run
    from ftk.eval.report import print_table

    if split is not None and split not in ("train", "validation", "test"):
        raise FtkError(f"--split {split!r}: expected train, validation or test")
    if predictions is not None:
        if not task or not out:
            raise FtkError("--predictions needs --task and --out")
        if run is not None:
            raise FtkError("give a run directory or --predictions, not both")
        metrics, out_dir = evaluate_predictions(predictions, task, out, data_dir=data, split=split or "test")
    elif run is not None:
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
    from ftk.eval.compare import compare, compare_markdown
    from ftk.fileio import write_json, write_text

    result = compare(a, b)
    md = compare_markdown(result)
    print(md, end="")
    if out:
        write_json(out / "compare.json", result)
        write_text(out / "compare.md", md)
