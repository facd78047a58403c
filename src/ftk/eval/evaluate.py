"""`ftk eval`: generate predictions for a prepared split, extract labels, score, report.

Predictions are appended to predictions.jsonl per finished batch (flushed and fsync'd) and keyed
by example id, so an interrupted eval resumes where it stopped, with no duplicates and no gaps.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ftk.data.prepare import load_manifest
from ftk.data.records import read_records
from ftk.data.task import TaskSpec, load_task
from ftk.errors import FtkError
from ftk.eval.extract import INVALID, make_extractor
from ftk.eval.identity import claimed, model_digest, text_digest, write_identity_of_file
from ftk.eval.predict import auto_batch_size, predict, predict_sharded, visible_gpus
from ftk.eval.predictions import PREDICTIONS, align, read_done, read_prediction_rows
from ftk.eval.report import write_outputs
from ftk.eval.scoring import score
from ftk.eval.shots import draw_shots, with_instruction
from ftk.fileio import sha256_file
from ftk.recipe import Recipe
from ftk.train.runs import read_run, run_task, status_of


def prompt_template_of(data_manifest: dict, task: TaskSpec) -> str:
    """The task prompt the prepared records were made with (the manifest's prompt version)."""
    return task.prompt(data_manifest.get("prompt_version"))


def split_records(prepared_dir: str | Path, split: str, expected_sha256: str | None = None,
                  limit: int | None = None) -> tuple[list[dict], dict]:
    """(records, prepared manifest) of a prepared split; with `expected_sha256`, the split must be
    the very file a run recorded (re-prepared data would silently change the evaluation)."""
    manifest = load_manifest(prepared_dir)
    info = manifest.get("splits", {}).get(split)
    if info is None:
        raise FtkError(f"prepared data has no {split!r} split (has {', '.join(manifest.get('splits', {})) or 'none'})",
                       path=Path(prepared_dir) / "manifest.json")
    path = Path(prepared_dir) / info["file"]
    if not path.is_file():
        raise FtkError("prepared split file is missing (prepare the data again)", path=path)
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise FtkError(f"the prepared {split} split changed since this run was trained (sha256 differs from the "
                       "run's data-manifest.json); prepare it again with the run's recipe.yaml", path=path)
    records = read_records(path)
    return (records[:limit] if limit else records), manifest


def check_eval_options(task: TaskSpec, *, mode: str, engine: str, out_dir: Path) -> None:
    if mode not in ("generate", "choice"):
        raise FtkError(f"--mode {mode!r}: expected generate or choice")
    if engine not in ("hf", "vllm", "openai"):
        raise FtkError(f"--engine {engine!r}: expected hf, vllm or openai")
    if engine == "openai" and mode == "choice":
        raise FtkError("--mode choice scores the labels with the model's own likelihoods; --engine openai generates "
                       "answers (leave --mode out, or use --mode generate)")
    if engine == "vllm":  # checked before anything is loaded or written
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise FtkError("--engine vllm: vLLM is not installed here (on a GPU node: pip install -c constraints.txt "
                           "-e '.[gpu]'); leave --engine out for ftk's own engine")
        if not visible_gpus():
            raise FtkError("--engine vllm needs a CUDA GPU and none is visible; leave --engine out for ftk's own engine")
    if mode == "choice" and not task.is_classification:
        raise FtkError(f"--mode choice needs a closed label set; task {task.name!r} is {task.kind}")
    if out_dir.exists() and not out_dir.is_dir():
        raise FtkError("output exists and is not a folder (expected a folder for the evaluation)", path=out_dir)


def parse_shard(shard: str) -> tuple[int, int]:
    """`I/N` of a sharded eval's worker (a hidden option, checked all the same): 0 <= I < N."""
    i, sep, n = shard.partition("/")
    if not (sep and i.isascii() and i.isdigit() and n.isascii() and n.isdigit() and int(i) < int(n)):
        raise FtkError(f"--shard {shard!r}: expected I/N with 0 <= I < N (ftk's own workers pass it)")
    return int(i), int(n)


def model_for(manifest: dict, recipe: Recipe, run_dir: Path, checkpoint: str | None = None) -> tuple[str, str | None, Path]:
    """(model path, adapter, weights folder) that a run's eval loads: the final model or a checkpoint;
    for a base-model "run" (`ftk eval --base`), the recipe's own model, untrained."""
    if manifest.get("kind") == "base":
        return recipe.model.name_or_path, None, Path(recipe.model.name_or_path)
    model_dir = Path(manifest.get("model_dir") or run_dir / "model")
    weights = model_dir
    if checkpoint is not None:
        weights = model_dir / f"checkpoint-{checkpoint}"
        if not weights.is_dir():
            saved = sorted(int(c.name.split("-")[1]) for c in model_dir.glob("checkpoint-*") if c.name[11:].isascii() and c.name[11:].isdigit())
            raise FtkError(f"no checkpoint {checkpoint} (saved: {saved or 'none'})", path=model_dir)
    if not (weights / "config.json").exists() and not (weights / "adapter_config.json").exists():
        raise FtkError(f"run has no trained model (status {status_of(manifest)}; did training finish?)", path=weights)
    if recipe.method.finetuning_type in ("lora", "prompt_tuning"):
        return recipe.model.name_or_path, str(weights), weights
    return str(weights), None, weights


def evaluate_run(run_dir: str | Path, *, out_dir: str | Path | None = None, batch_size: int | None = None,
                 limit: int | None = None, split: str | None = None, mode: str | None = None,
                 engine: str = "hf", shards: int | None = None, shard: str | None = None,
                 checkpoint: str | None = None, fresh: bool = False, shots: int | None = None,
                 served=None) -> tuple[dict, Path]:
    """Evaluate a finished training run (or one of its checkpoints, or a base-model folder made by
    `ftk eval --base`) on its recipe's eval split; write reports to out_dir.

    Everything is checked before the output folder is made: the run, its task (the run's own
    copy of the task YAML), the split (the very file the run recorded), the model, the options.
    Predictions already in the folder are reused only when the same model, mode, engine, prompt
    settings and data made them (eval/identity.py); `fresh` starts the folder anew. `shots` (a base
    model only): K in-context examples from the train split before every item (eval/shots.py).
    `served` (engine openai, eval/served.py): a model behind an OpenAI-compatible server answers instead.
    """
    run_dir = Path(run_dir)
    manifest, recipe, _ = read_run(run_dir)
    task = run_task(run_dir, manifest, recipe)
    base = manifest.get("kind") == "base"
    split = split or recipe.eval.split
    recorded = manifest.get("data", {}).get("splits", {}).get(split, {}).get("sha256")
    records, data_manifest = split_records(recipe.data.prepared_dir, split, recorded, limit or recipe.eval.limit)
    model_path, adapter, weights = model_for(manifest, recipe, run_dir, checkpoint)
    head = recipe.method.head != "none"
    mode = mode or recipe.eval.mode
    if head and mode == "choice":
        raise FtkError("--mode choice scores generated labels; this run has a classification head, which "
                       "predicts labels directly (leave --mode out)")
    examples = _shots(shots, base=base, head=head, manifest=manifest, recipe=recipe, task=task)
    if base and task.base_instruction:  # base models are told how to answer (examples and items alike)
        records, examples = (with_instruction(x, task.base_instruction) for x in (records, examples))
    name = f"eval-{split}" + ("" if mode == "generate" else f"-{mode}") + (f"-{shots}shot" if shots else "") + \
        (f"-ckpt{checkpoint}" if checkpoint else "")
    out_dir = Path(out_dir) if out_dir else run_dir / name
    check_eval_options(task, mode=mode, engine=engine, out_dir=out_dir)
    if head and engine != "hf":
        raise FtkError(f"--engine {engine}: a classification head is evaluated by ftk's own forward pass (hf)")
    if (engine == "openai") != (served is not None):
        raise FtkError("--engine openai needs --base-url and --model (and those go with --engine openai only)")
    api = tokenizer = None
    if served is not None:
        from ftk.eval.served import check_served, preflight, resolve_api

        check_served(served)
        if checkpoint or shard is not None or (shards or 1) > 1:
            raise FtkError("--engine openai asks the served model: no --checkpoint or --shards")
        api, tokenizer = resolve_api(served, model_path, recipe.model.trust_remote_code)
        import asyncio

        asyncio.run(preflight(served))
    bs = batch_size or recipe.eval.batch_size
    if bs == "auto":
        bs = auto_batch_size()
    kwargs = dict(model_path=model_path, adapter=adapter, template=recipe.model.template, task=task,
                  batch_size=bs, max_new_tokens=recipe.eval.max_new_tokens,
                  cutoff_len=recipe.train.cutoff_len, trust_remote_code=recipe.model.trust_remote_code,
                  mode=mode, engine=engine, prompt_template=prompt_template_of(data_manifest, task), shots=examples)
    if shard is not None:  # a worker of a sharded eval: predict its slice only
        i, n = parse_shard(shard)
        predict(records[i::n], Path(out_dir), file_name=f"predictions.shard-{i}.jsonl", progress=False,
                room_records=records, **kwargs)
        return {}, Path(out_dir)
    shards = 1 if served is not None else shards if shards is not None else max(1, visible_gpus())
    if shards > 1 and not head and not visible_gpus():
        print(f"[ftk] warning: --shards {shards} with no GPU runs {shards} CPU processes that share this machine's "
              f"cores, each loading the model: usually slower than one", file=sys.stderr, flush=True)
    identity = {
        "made_by": f"{manifest.get('name')} {'checkpoint ' + checkpoint if checkpoint else '(final model)'}",
        "model": model_digest(weights) or str(weights),
        "base_model": (model_digest(model_path) or model_path) if adapter else None,
        "checkpoint": checkpoint, "mode": "head" if head else mode, "engine": engine,
        "template": recipe.model.template, "cutoff_len": recipe.train.cutoff_len,
        "max_new_tokens": None if head else recipe.eval.max_new_tokens,
        "prompt": text_digest(prompt_template_of(data_manifest, task), task.base_instruction if base else None,
                              task.labels if task.is_classification else None),
        "split": split, "data_sha256": split_sha256(recipe.data.prepared_dir, data_manifest, split),
        "shots": [r["id"] for r in examples] or None,
    }
    if served is not None:  # what answers is the server's model, whatever the run's weights are
        identity.update({"model": f"{served.model} at {served.base_url}", "base_model": None, "api": api})
    with claimed(Path(out_dir), identity, fresh=fresh):
        done = read_done(Path(out_dir) / PREDICTIONS)
        fresh_rows = sum(r["id"] not in done for r in records)  # rows this call predicts (the rest are reused)
        started = time.perf_counter()
        if head:
            from ftk.eval.heads import head_info, predict_heads

            shards, mode = 1, "head"
            preds = predict_heads(records, Path(out_dir), model_dir=weights, base_model=recipe.model.name_or_path,
                                  task=task, cutoff_len=recipe.train.cutoff_len, batch_size=kwargs["batch_size"],
                                  trust_remote_code=recipe.model.trust_remote_code,
                                  info=head_info(recipe, task) if base else None,
                                  info_dir=Path(manifest.get("model_dir") or run_dir / "model"))
        elif served is not None:
            from ftk.eval.served import predict_served

            preds, served_info = predict_served(
                records, Path(out_dir), served, api=api, tokenizer=tokenizer, template=recipe.model.template,
                task=task, cutoff_len=recipe.train.cutoff_len, prompt_template=kwargs["prompt_template"],
                shots=examples, max_new_tokens=recipe.eval.max_new_tokens)
        elif shards > 1:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            extra = ["--split", split, "--mode", mode, "--engine", engine,
                     "--batch-size", str(kwargs["batch_size"])] + (["--limit", str(limit)] if limit else []) + \
                (["--checkpoint", checkpoint] if checkpoint else []) + (["--shots", str(shots)] if shots else [])
            preds = predict_sharded(run_dir, records, Path(out_dir), shards, extra)
        else:
            preds = predict(records, Path(out_dir), **kwargs)
        seconds = time.perf_counter() - started
    metrics, rows = score(task, records, preds, base=base)
    # throughput of this call's own predictions (model load included); when every row was reused (a
    # re-scoring), the figures of the call that made them, from the metrics it wrote, else none
    metrics["eval_seconds"] = round(seconds, 2)
    metrics["examples_per_s"] = round(fresh_rows / seconds, 3) if fresh_rows > 0 and seconds > 0 else None
    metrics["reused_rows"] = len(records) - fresh_rows
    if fresh_rows == 0:
        metrics.update(_earlier_throughput(Path(out_dir) / "metrics.json", len(records)))
    metrics["truncated_prompts"] = sum(bool(preds[r["id"]].get("truncated")) for r in records)
    metrics["cutoff_len"] = recipe.train.cutoff_len
    metrics.update({"run_dir": str(run_dir), "split": split, "model": model_path, "adapter": adapter,
                    "checkpoint": checkpoint, "mode": mode, "engine": engine, "shards": shards,
                    "shots": len(examples), "shot_ids": [r["id"] for r in examples],
                    "identity": {k: v for k, v in identity.items() if k != "made_by"}})
    if served is not None:
        metrics["served"] = served_info
        metrics["model"], metrics["adapter"] = f"{served.model} at {served.base_url}", None
    write_outputs(out_dir, metrics, rows, task)
    if served is not None and served_info["failed"]:
        from ftk.errors import RequestsFailed

        n = sum(served_info["failed"].values())
        raise RequestsFailed(f"{n} of {len(records)} requests failed ("
                             + ", ".join(f"{k} x {v}" for k, v in served_info["failed"].items())
                             + f"); they count as invalid in {out_dir}/metrics.json; run the same command again "
                             "to ask only for those")
    return metrics, out_dir


def _shots(k: int | None, *, base: bool, head: bool, manifest: dict, recipe: Recipe, task: TaskSpec) -> list[dict]:
    """The K in-context examples of a base-model evaluation, from the split file the run recorded."""
    if not k:
        return []
    if not base:
        raise FtkError("--shots gives a base model in-context examples: use it with --base (a fine-tuned model "
                       "answers from what it learnt)")
    if head:
        raise FtkError("--shots needs a generative model; a classification head reads no examples")
    recorded = manifest.get("data", {}).get("splits", {}).get("train", {}).get("sha256")
    if recorded is None:
        raise FtkError("--shots draws its examples from the train split, and this recipe's prepared data has none "
                       "(set `data.train`)", path=Path(recipe.data.prepared_dir) / "manifest.json")
    train, _ = split_records(recipe.data.prepared_dir, "train", recorded)
    return draw_shots(train, task, k, recipe.data.seed, path=Path(recipe.data.prepared_dir))


def split_sha256(prepared_dir: str | Path, data_manifest: dict, split: str) -> str:
    info = data_manifest.get("splits", {}).get(split, {})
    return info.get("sha256") or sha256_file(Path(prepared_dir) / info["file"])


def _earlier_throughput(path: Path, n: int) -> dict:
    """eval_seconds / examples_per_s of the metrics.json an earlier call wrote for the same rows."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if old.get("examples_per_s") is None or old.get("n") != n:
        return {}
    return {"eval_seconds": old.get("eval_seconds"), "examples_per_s": old["examples_per_s"],
            "throughput_of": "the earlier call that made these predictions (this one re-scored them)"}


def evaluate_predictions(path: str | Path, task_name: str, out_dir: str | Path, *, data_dir: str | Path | None = None,
                         split: str = "test") -> tuple[dict, Path]:
    """Score an existing predictions file (ftk's or LLaMA-Factory's generated_predictions.jsonl).

    With `data_dir` (a prepared folder) gold labels come from its split: ftk rows match by id,
    LLaMA-Factory rows by order. Without it, gold comes from each row's `label`.
    """
    try:
        task = load_task(task_name)
    except FtkError as exc:
        raise (exc if exc.path else FtkError(f"--task: {exc}")) from None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FtkError("output exists and is not a folder (expected a folder for the evaluation)", path=out_dir)
    rows, fmt = read_prediction_rows(path)
    if data_dir is not None:
        manifest = load_manifest(data_dir)
        info = manifest.get("splits", {}).get(split)
        if info is None:
            raise FtkError(f"prepared data has no {split!r} split", path=Path(data_dir) / "manifest.json")
        data_path = Path(data_dir) / info["file"]
        records = read_records(data_path)
        preds = align(rows, fmt, records, path, data_path)
        if fmt == "ftk" and len(preds) != len(records):
            raise FtkError(f"{len(preds)} predictions but the prepared split {data_path} has {len(records)} rows",
                           path=path)
    else:
        extract = make_extractor(task.labels, task.extraction.steps, task.extraction.synonyms)
        records, preds = [], {}
        for i, row in enumerate(rows):
            label = row.get("label")
            gold = label if label in task.labels else extract(str(label or ""))
            if gold == INVALID:
                raise FtkError(f"gold `label` {label!r} is not a label of task {task.name!r} "
                               "(pass --data to take gold labels from the prepared split)",
                               path=path, where=str(row["_line"]))
            rid = row.get("id", f"row-{i:06d}")
            records.append({"id": rid, "label": gold, "instruction": row.get("prompt", ""), "input": ""})
            preds[rid] = {"id": rid, "label": gold, "predict": row["predict"]}
    out_dir = Path(out_dir)
    metrics, scored = score(task, records, preds)
    metrics.update({"predictions": str(path), "format": fmt, "split": split})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_identity_of_file(out_dir, path)  # so `ftk eval RUN --out` here never takes these rows as its own
    with open(out_dir / PREDICTIONS, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(preds[r["id"]], ensure_ascii=False) + "\n")
    write_outputs(out_dir, metrics, scored, task)
    return metrics, out_dir
