"""Data-stage commands: prepare, tasks, synth."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ftk.cli.app import app
from ftk.errors import FtkError


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
    seed: Annotated[int, typer.Option(min=0, help="seed for sampling and splits")] = 42,
    max_samples: Annotated[Optional[list[str]], typer.Option(help="SPLIT=N seeded sample (repeatable)")] = None,
    sample_strategy: Annotated[str, typer.Option(help="uniform, stratified (label shares kept) or balanced (the same number of each label)")] = "uniform",
    val_size: Annotated[Optional[float], typer.Option(help="fraction (<1) or count split off train")] = None,
    test_size: Annotated[Optional[float], typer.Option(help="fraction (<1) or count split off train for test")] = None,
    drop_overlap: Annotated[bool, typer.Option(help="drop train rows whose input is in validation/test")] = False,
    skip_malformed: Annotated[bool, typer.Option(help="drop malformed rows and count them instead of failing")] = False,
    max_malformed: Annotated[float, typer.Option(min=0.0, max=1.0, help="with --skip-malformed: the largest share "
                                                 "of a split that may be dropped")] = 0.01,
    strict: Annotated[bool, typer.Option(help="fail on the first malformed row and on train/test overlap")] = False,
) -> None:
    """Turn raw data into LLaMA-Factory files + dataset_info.json + manifest.json.

    Examples:\n
      ftk prepare configs/agnews_tiny_cpu.yaml\n
      ftk prepare --task agnews --test ../shared/realdata/ag_news/test.csv --out data/prepared/agnews_real
    """
    from ftk.data.prepare import prepare, prepare_recipe
    from ftk.data.task import load_task

    def size(x: float | None) -> float | int | None:
        return int(x) if x is not None and x >= 1 else x

    if recipe is not None:
        from ftk.validate import check_for_prepare

        if task or out or train or validation or test:
            raise FtkError("give a recipe, or --task/--out/--train/--validation/--test, not both")
        r = check_for_prepare(recipe, overrides)
        out_dir = Path(r.data.prepared_dir)
        manifest = prepare_recipe(r, strict=strict, skip_malformed=skip_malformed, max_malformed=max_malformed,
                                  recipe_path=recipe)
    else:
        if not task or not out:
            raise FtkError("give a recipe, or --task and --out with at least one of --train/--validation/--test")
        from ftk.recipe import SAMPLE_STRATEGIES

        if sample_strategy not in SAMPLE_STRATEGIES:
            raise FtkError(f"--sample-strategy {sample_strategy!r}: expected {', '.join(SAMPLE_STRATEGIES[:-1])} "
                           f"or {SAMPLE_STRATEGIES[-1]}")
        for name, value in (("--val-size", val_size), ("--test-size", test_size)):
            if value is not None and value <= 0:
                raise FtkError(f"{name} {value}: expected a fraction in (0, 1) or a row count >= 1")
        samples = {}
        for item in max_samples or []:
            split, sep, n = item.partition("=")
            if not sep or not (n.isascii() and n.isdigit()) or int(n) < 1 or split not in ("train", "validation", "test"):
                raise FtkError(f"--max-samples {item!r}: expected SPLIT=N with SPLIT train, validation or test "
                               "and N >= 1")
            samples[split] = int(n)
        sources = {k: v for k, v in (("train", train), ("validation", validation), ("test", test)) if v}
        try:
            task_spec = load_task(task)
        except FtkError as exc:
            raise (exc if exc.path else FtkError(f"--task: {exc}")) from None
        out_dir = out
        manifest = prepare(task_spec, sources, out, prompt_version=prompt_version, seed=seed,
                           max_samples=samples, sample_strategy=sample_strategy, val_size=size(val_size),
                           test_size=size(test_size), drop_overlap=drop_overlap, source_format=source_format,
                           strict=strict, skip_malformed=skip_malformed, max_malformed=max_malformed)
    for split, info in manifest["splits"].items():
        counts = info.get("label_counts") or info.get("entity_counts") or {}
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        extra = [f"{v} {k}" for k, v in info.get("cleaning", {}).items() if v]
        if info["malformed"]["count"]:
            extra.append(f"{info['malformed']['count']} malformed dropped")
        print(f"{split}: {info['rows']} rows -> {out_dir / info['file']} [{info['dataset']}]"
              + (f" ({shown})" if shown else "") + (f"; removed: {', '.join(extra)}" if extra else ""))
    print(f"manifest: {out_dir / 'manifest.json'}")
    for warning in manifest.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)


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
    from ftk.data.task import builtin_tasks, load_task

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
    from ftk.data.show import show

    print(show(task, data=data, file=file, prompt_version=prompt_version), end="")


@app.command("synth")
def synth_cmd(
    out: Annotated[Path, typer.Argument(help="output folder for train.csv and test.csv")],
    n_train: Annotated[int, typer.Option(min=1, max=10_000_000, help="train rows")] = 2000,
    n_test: Annotated[int, typer.Option(min=1, max=10_000_000, help="test rows")] = 400,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="seed")] = 0,
    noise: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of words drawn from other topics")] = 0.15,
) -> None:
    """Write a seeded synthetic 4-topic news dataset in the canonical AG News CSV layout.

    Examples:\n
      ftk synth data/synth/agnews\n
      ftk synth data/synth/agnews_big --n-train 20000 --n-test 2000 --seed 1
    """
    from ftk.data.synth import write_dataset

    paths = write_dataset(out, n_train=n_train, n_test=n_test, seed=seed, noise=noise)
    for split, p in paths.items():
        print(f"{split}: {p}")


@app.command("synth-data")
def synth_data_cmd(
    spec: Annotated[Path, typer.Argument(help="synthetic-data spec YAML")],
    out: Annotated[Optional[Path], typer.Option(help="output folder (default data/synthetic/<name>)")] = None,
) -> None:
    """Training rows in a task's raw format from OpenAI-compatible endpoints: seeded requests (seed
    examples drawn per request), answers split into items, validated, de-duplicated (also against the
    seeds and leakage files), written atomically with a manifest. Finished requests are cached: a
    re-run asks only for the missing ones. API keys are read from the variables the spec names.

    Examples:\n
      ftk synth-data examples/synth_agnews.yaml\n
      ftk synth-data examples/synth_agnews.yaml --out data/synthetic/agnews_run2
    """
    from ftk.data.llm.run import summary_lines, synth_data

    manifest = synth_data(spec, out)
    out_dir = Path(out) if out else Path("data") / "synthetic" / manifest["name"]
    for line in summary_lines(manifest, out_dir):
        print(line)
