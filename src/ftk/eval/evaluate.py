"""`ftk eval`: generate predictions for a prepared split, extract labels, score, report.

Predictions are appended to predictions.jsonl per finished batch (flushed and fsync'd) and keyed
by example id, so an interrupted eval resumes where it stopped, with no duplicates and no gaps.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ftk.data.prepare import load_manifest
from ftk.data.records import read_records
from ftk.data.task import TaskSpec, load_task
from ftk.errors import FtkError
from ftk.eval import generate
from ftk.eval.extract import INVALID, make_extractor
from ftk.eval.predictions import align, gold_of, read_prediction_rows
from ftk.eval.report import write_outputs
from ftk.eval.scoring import score
from ftk.fileio import atomic_open
from ftk.recipe import Recipe
from ftk.train.runs import read_manifest

PREDICTIONS = "predictions.jsonl"


def read_done(path: Path) -> dict[str, dict]:
    """Rows already written (a torn last line from a crash is ignored and rewritten)."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "id" in row:
                done[row["id"]] = row
    return done


def _write_rows(path: Path, rows) -> None:
    """Replace the predictions file atomically with `rows` (drops a torn last line, fixes order)."""
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def max_new_tokens_for(task: TaskSpec, tokenizer, records: list[dict], margin: int = 4, cap: int = 512) -> int:
    """Longest possible target in tokens plus a margin: the label set for classification, else the
    longest target among (up to 5,000 of) the records, doubled for open-ended outputs."""
    if task.is_classification:
        return max(len(tokenizer.encode(task.target_for(lab), add_special_tokens=False)) for lab in task.labels) + margin
    targets = [r.get("output", "") for r in records[:5000]]
    longest = max((len(tokenizer.encode(t, add_special_tokens=False)) for t in targets), default=16)
    return min(cap, 2 * longest + margin)


def label_token_ids(task: TaskSpec, loaded, *, end: bool | None = None) -> list[list[int]]:
    """Each label's target tokens; with the end-of-turn token appended when `end` is true, or (None)
    only where needed: when one label's tokens are a prefix of another's. Drafts need `end=True`."""
    ids = [loaded.tokenizer.encode(task.target_for(lab), add_special_tokens=False) for lab in task.labels]
    if end is None:
        end = any(a != b and b[: len(a)] == a for a in ids for b in ids)
    if end:
        eot = loaded.stop_ids[0] if loaded.tokenizer.eos_token_id is None else loaded.tokenizer.eos_token_id
        ids = [x + [eot] for x in ids]
    return ids


def auto_batch_size() -> int:
    """256 on a GPU (halved on out-of-memory); 32 on CPU, where smaller batches measured faster."""
    return 256 if visible_gpus() else 32


def predict(records: list[dict], out_dir: Path, *, model_path: str, template: str, task: TaskSpec,
            adapter: str | None = None, batch_size: int = 64, max_new_tokens: int | None = None,
            cutoff_len: int | None = None, trust_remote_code: bool = False, mode: str = "generate",
            engine: str = "hf", file_name: str = PREDICTIONS, progress: bool = True) -> dict[str, dict]:
    """Predict every record not yet in out_dir/<file_name>; return all rows by id.

    Rows are appended per finished batch (flushed, fsync'd), so a killed eval resumes here.
    mode `generate`: greedy text. mode `choice`: the most likely label, plus `label_probs`.
    """
    from tqdm import tqdm

    if mode == "choice" and not task.is_classification:
        raise FtkError(f"--mode choice needs a closed label set; task {task.name!r} is {task.kind}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name
    done = read_done(path)
    todo = [r for r in records if r["id"] not in done]
    if not todo:
        _write_rows(path, [done[r["id"]] for r in records])
        return done
    if done:
        _write_rows(path, done.values())  # resume: drop a torn last line before appending
    loaded = generate.load(model_path, template, adapter=adapter, trust_remote_code=trust_remote_code) \
        if engine == "hf" else None
    if engine == "vllm":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        tmpl = generate.load_template(tok, template)
    else:
        tok, tmpl = loaded.tokenizer, loaded.template
    prompts = [generate.encode_prompt(tmpl, tok, r, cutoff_len) for r in todo]
    mnt = max_new_tokens or max_new_tokens_for(task, tok, records)
    if engine == "vllm":
        batches = generate.vllm_generate(model_path, prompts, tok, tmpl, adapter=adapter, max_new_tokens=mnt,
                                         trust_remote_code=trust_remote_code)
    elif mode == "choice":
        eng = generate.Engine(loaded, prompts)
        batches = eng.choice(label_token_ids(task, loaded), batch_size=batch_size)
    else:
        # A closed label set serves as verified drafts: identical output to plain greedy decoding.
        drafts = label_token_ids(task, loaded, end=True) if task.is_classification else None
        batches = generate.Engine(loaded, prompts).generate(batch_size=batch_size, max_new_tokens=mnt,
                                                            label_ids=drafts)
    rate = generate.Throughput()
    with open(path, "a", encoding="utf-8") as fh, tqdm(total=len(records), initial=len(done), desc=mode,
                                                       unit="ex", disable=not progress) as bar:
        for idx, result in batches:
            if mode == "choice":
                import torch

                probs = torch.softmax(result, dim=-1).tolist()
                best = result.argmax(-1).tolist()
            for j, i in enumerate(idx):
                rec = todo[i]
                row = {"id": rec["id"], "label": gold_of(rec)}
                if mode == "choice":
                    row["predict"] = task.target_for(task.labels[best[j]])
                    row["label_probs"] = {lab: round(p, 6) for lab, p in zip(task.labels, probs[j])}
                else:
                    row["predict"] = result[j]
                done[rec["id"]] = row
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(idx))
            bar.set_postfix({"ex/s": f"{rate.add(len(idx)):.1f}"})
    _write_rows(path, [done[r["id"]] for r in records])  # complete: the data's original order
    return done


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def predict_sharded(run_dir: Path, records: list[dict], out_dir: Path, shards: int, argv_extra: list[str]) -> dict:
    """Data-parallel eval: one `ftk eval --shard i/N` process per GPU (or CPU), merged by id."""
    from ftk.train import launch

    procs = []
    n_gpus = visible_gpus()
    for i in range(shards):
        env = launch.launch_env({"CUDA_VISIBLE_DEVICES": str(i)} if n_gpus >= shards else None)
        argv = ["ftk", "eval", str(run_dir), "--out", str(out_dir), "--shard", f"{i}/{shards}", *argv_extra]
        log = open(out_dir / f"shard-{i}.log", "ab")
        procs.append((subprocess.Popen(launch.resolve(argv), env=env, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for i, (proc, log) in enumerate(procs):
        if proc.wait() != 0:
            failed.append(i)
        log.close()
    if failed:
        raise FtkError(f"eval shard(s) {failed} failed; see {out_dir}/shard-<i>.log", path=out_dir)
    merged: dict[str, dict] = read_done(out_dir / PREDICTIONS)
    for i in range(shards):
        merged.update(read_done(out_dir / f"predictions.shard-{i}.jsonl"))
    kept = {r["id"]: merged[r["id"]] for r in records if r["id"] in merged}
    _write_rows(out_dir / PREDICTIONS, kept.values())
    for i in range(shards):
        (out_dir / f"predictions.shard-{i}.jsonl").unlink(missing_ok=True)
    return kept


def eval_split_records(recipe: Recipe, split: str, limit: int | None = None) -> list[dict]:
    manifest = load_manifest(recipe.data.prepared_dir)
    info = manifest.get("splits", {}).get(split)
    if info is None:
        raise FtkError(f"prepared data has no {split!r} split",
                       path=Path(recipe.data.prepared_dir) / "manifest.json")
    records = read_records(Path(recipe.data.prepared_dir) / info["file"])
    return records[:limit] if limit else records


def evaluate_run(run_dir: str | Path, *, out_dir: str | Path | None = None, batch_size: int | None = None,
                 limit: int | None = None, split: str | None = None, mode: str | None = None,
                 engine: str = "hf", shards: int | None = None, shard: str | None = None) -> tuple[dict, Path]:
    """Evaluate a finished training run on its recipe's eval split; write reports to out_dir."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    recipe = Recipe.model_validate(manifest["recipe"]).stage_recipes()[-1][1]  # the last stage's
    task = load_task(recipe.task)
    split = split or recipe.eval.split
    records = eval_split_records(recipe, split, limit or recipe.eval.limit)
    model_dir = Path(manifest.get("model_dir") or run_dir / "model")
    if not (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists():
        raise FtkError("run has no trained model (did training finish?)", path=model_dir)
    if recipe.method.finetuning_type == "lora":
        model_path, adapter = recipe.model.name_or_path, str(model_dir)
    else:
        model_path, adapter = str(model_dir), None
    mode = mode or recipe.eval.mode
    out_dir = Path(out_dir) if out_dir else run_dir / (f"eval-{split}" + ("" if mode == "generate" else f"-{mode}"))
    bs = batch_size or recipe.eval.batch_size
    if bs == "auto":
        bs = auto_batch_size()
    kwargs = dict(model_path=model_path, adapter=adapter, template=recipe.model.template, task=task,
                  batch_size=bs, max_new_tokens=recipe.eval.max_new_tokens,
                  cutoff_len=recipe.train.cutoff_len, trust_remote_code=recipe.model.trust_remote_code,
                  mode=mode, engine=engine)
    if shard is not None:  # a worker of a sharded eval: predict its slice only
        i, n = (int(x) for x in shard.split("/"))
        predict(records[i::n], Path(out_dir), file_name=f"predictions.shard-{i}.jsonl", progress=False, **kwargs)
        return {}, Path(out_dir)
    shards = shards if shards is not None else max(1, visible_gpus())
    if shards > 1:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        extra = ["--split", split, "--mode", mode, "--engine", engine,
                 "--batch-size", str(kwargs["batch_size"])] + (["--limit", str(limit)] if limit else [])
        preds = predict_sharded(run_dir, records, Path(out_dir), shards, extra)
    else:
        preds = predict(records, Path(out_dir), **kwargs)
    metrics, rows = score(task, records, preds)
    metrics.update({"run_dir": str(run_dir), "split": split, "model": model_path, "adapter": adapter,
                    "mode": mode, "engine": engine, "shards": shards})
    write_outputs(out_dir, metrics, rows)
    return metrics, out_dir


def evaluate_predictions(path: str | Path, task_name: str, out_dir: str | Path, *, data_dir: str | Path | None = None,
                         split: str = "test") -> tuple[dict, Path]:
    """Score an existing predictions file (ftk's or LLaMA-Factory's generated_predictions.jsonl).

    With `data_dir` (a prepared folder) gold labels come from its split: ftk rows match by id,
    LLaMA-Factory rows by order. Without it, gold comes from each row's `label`.
    """
    task = load_task(task_name)
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
    with open(out_dir / PREDICTIONS, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(preds[r["id"]], ensure_ascii=False) + "\n")
    write_outputs(out_dir, metrics, scored)
    return metrics, out_dir
