"""`ftk eval`: generate predictions for a prepared split, extract labels, score, report.

Predictions are appended to predictions.jsonl per finished batch (flushed and fsync'd) and keyed
by example id, so an interrupted eval resumes where it stopped, with no duplicates and no gaps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ftk import generate
from ftk.errors import FtkError
from ftk.extract import INVALID, make_extractor
from ftk.predictions import align, read_prediction_rows
from ftk.prepare import load_manifest, read_records
from ftk.recipe import Recipe
from ftk.report import write_outputs
from ftk.scoring import score
from ftk.runs import read_manifest
from ftk.tasks import TaskSpec, load_task

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


def _rewrite_clean(path: Path, done: dict[str, dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in done.values():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def max_new_tokens_for(task: TaskSpec, tokenizer, records: list[dict], margin: int = 4, cap: int = 512) -> int:
    """Longest possible target in tokens plus a margin: the label set for classification, else the
    longest target among (up to 5,000 of) the records, doubled for open-ended outputs."""
    if task.is_classification:
        return max(len(tokenizer.encode(task.target_for(lab), add_special_tokens=False)) for lab in task.labels) + margin
    targets = [r.get("output", "") for r in records[:5000]]
    longest = max((len(tokenizer.encode(t, add_special_tokens=False)) for t in targets), default=16)
    return min(cap, 2 * longest + margin)


def predict(records: list[dict], out_dir: Path, *, model_path: str, template: str, task: TaskSpec,
            adapter: str | None = None, batch_size: int = 64, max_new_tokens: int | None = None,
            cutoff_len: int | None = None, trust_remote_code: bool = False) -> dict[str, dict]:
    """Generate for every record not yet in out_dir/predictions.jsonl; return all rows by id."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PREDICTIONS
    done = read_done(path)
    if done:
        _rewrite_clean(path, done)
    todo = [r for r in records if r["id"] not in done]
    if not todo:
        return done
    loaded = generate.load(model_path, template, adapter=adapter, trust_remote_code=trust_remote_code)
    mnt = max_new_tokens or max_new_tokens_for(task, loaded.tokenizer, records)
    prompts = [generate.encode_prompt(loaded.template, loaded.tokenizer, r, cutoff_len) for r in todo]
    rate = generate.Throughput()
    with open(path, "a", encoding="utf-8") as fh, tqdm(total=len(records), initial=len(done),
                                                       desc="generate", unit="ex") as bar:
        for idx, texts in generate.generate_batches(loaded, prompts, batch_size=batch_size, max_new_tokens=mnt):
            for i, text in zip(idx, texts):
                rec = todo[i]
                row = {"id": rec["id"], "label": rec.get("label", rec.get("output")), "predict": text}
                done[rec["id"]] = row
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(idx))
            bar.set_postfix({"ex/s": f"{rate.add(len(idx)):.1f}"})
    return done


def eval_split_records(recipe: Recipe, split: str, limit: int | None = None) -> list[dict]:
    manifest = load_manifest(recipe.data.prepared_dir)
    info = manifest.get("splits", {}).get(split)
    if info is None:
        raise FtkError(f"prepared data has no {split!r} split",
                       path=Path(recipe.data.prepared_dir) / "manifest.json")
    records = read_records(Path(recipe.data.prepared_dir) / info["file"])
    return records[:limit] if limit else records


def evaluate_run(run_dir: str | Path, *, out_dir: str | Path | None = None, batch_size: int | None = None,
                 limit: int | None = None, split: str | None = None) -> tuple[dict, Path]:
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
    out_dir = Path(out_dir) if out_dir else run_dir / f"eval-{split}"
    preds = predict(records, out_dir, model_path=model_path, adapter=adapter, template=recipe.model.template,
                    task=task, batch_size=batch_size or recipe.eval.batch_size,
                    max_new_tokens=recipe.eval.max_new_tokens, cutoff_len=recipe.train.cutoff_len,
                    trust_remote_code=recipe.model.trust_remote_code)
    metrics, rows = score(task, records, preds)
    metrics.update({"run_dir": str(run_dir), "split": split, "model": model_path, "adapter": adapter})
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
