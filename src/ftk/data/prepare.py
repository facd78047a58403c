"""Raw examples -> LLaMA-Factory files + dataset_info.json + manifest.json.

Two steps. `plan_prepare` does everything that can fail, in memory: read every split -> apply the
malformed-row policy -> clean (empty, duplicate, near-duplicate rows) -> split off test /
validation -> sample -> check train/test overlap. `write_prepared` then builds the whole output
folder under a temporary sibling name (manifest last) and swaps it in with two renames, so a
killed prepare leaves either the old complete folder or the new complete one, never a mix;
leftovers of a killed run are removed by the next. Deterministic: the same inputs, task, prompt
version and seed give byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ftk.data import dataset_info, spans
from ftk.data.cleaning import drop_duplicates, drop_near_duplicates, norm_text
from ftk.data.records import to_record
from ftk.data.rows import Example, Malformed, ReadResult
from ftk.data.sampling import sample, split_off
from ftk.data.sources import read_source
from ftk.data.task import TaskSpec
from ftk.errors import FtkError
from ftk.fileio import atomic_open, fault_point, folder_lock, sha256_file, write_json

MANIFEST = "manifest.json"
MAX_MALFORMED = 0.01


@dataclass
class SplitData:
    name: str
    source: str
    examples: list[Example]
    malformed: list[Malformed] = field(default_factory=list)
    cleaning: Counter = field(default_factory=Counter)
    rows_read: int = 0
    read_counts: dict = field(default_factory=dict)


@dataclass
class Plan:
    """A prepared dataset in memory: everything checked, nothing written."""

    task: TaskSpec
    prompt: str
    prompt_version: str
    prefix: str
    seed: int
    sample_strategy: str
    splits: dict[str, SplitData]
    warnings: list[str]
    overlap: dict[str, int]


def _counts(task: TaskSpec, examples: list[Example]) -> dict:
    if task.kind == "ner":
        c = Counter(s.type for ex in examples for s in spans.tags_to_spans(ex.meta["tags"]))
        return {"entity_counts": {t: c.get(t, 0) for t in task.labels}}
    if task.is_classification:
        c = Counter(ex.label for ex in examples)
        return {"label_counts": {lab: c.get(lab, 0) for lab in task.labels}}
    if task.kind == "shopbench":
        return {"label_counts": dict(sorted(Counter(ex.label for ex in examples).items()))}
    return {}


# --- malformed rows ---------------------------------------------------------------------------


def check_malformed(task: TaskSpec, res: ReadResult, *, skip: bool, max_malformed: float = MAX_MALFORMED) -> None:
    """Raise unless the malformed rows of one source may be dropped (and counted).

    A label map that matches most rows is the task YAML's mistake, named by key. Without `skip`,
    any malformed row fails. With it, the drop is refused when more than `max_malformed` of the
    rows would go, or when a whole label would vanish.
    """
    if not res.malformed:
        return
    first = res.malformed[0]
    unknown = [m for m in res.malformed if m.kind == "unknown_label"]
    if task.is_classification and res.raw_labels and len(unknown) * 2 > res.rows_read:
        spec = next((s for s in task.sources.values() if s.label_map is not None), None)
        seen = ", ".join(f"{v!r} x{n}" for v, n in res.raw_labels.most_common(5))
        expected = ", ".join(map(repr, spec.label_map)) if spec and spec.label_map else ", ".join(map(repr, task.labels))
        where = "label_map" if spec and spec.label_map is not None else "labels"
        key = next((f"sources.{n}.{where}" for n, s in task.sources.items() if s.label_map is not None), "labels")
        raise FtkError(f"{len(unknown)} of {res.rows_read} rows of {res.source} have a label this task does not "
                       f"map ({seen}; expected {expected}); check the label values or the label column",
                       path=task.path or res.source, where=key)
    n, total = len(res.malformed), max(res.rows_read, 1)
    if not skip:
        raise FtkError(f"{first.reason} ({n} malformed row(s) of {res.rows_read} in this file; pass "
                       "--skip-malformed to drop and count them)", path=first.path, where=str(first.line))
    if n / total > max_malformed:
        raise FtkError(f"{n} of {res.rows_read} rows ({n / total:.1%}) are malformed, more than --max-malformed "
                       f"{max_malformed:.0%} would drop (first: {first.reason})", path=first.path,
                       where=str(first.line))
    # A label map typo drops a whole class: a label left with no rows while a class-sized block of
    # rows (at least 5, and half an average class) has labels the task does not map.
    class_size = res.rows_read / max(len(task.labels), 1)
    if task.is_classification and len(unknown) >= max(5, class_size / 2):
        kept = Counter(ex.label for ex in res.examples)
        gone = [lab for lab in task.labels if not kept[lab]]
        if gone:
            seen = ", ".join(f"{v!r} x{k}" for v, k in res.raw_labels.most_common(3))
            raise FtkError(f"dropping the {len(unknown)} rows with unknown labels ({seen}) would leave no "
                           f"{gone[0]!r} rows; fix the label map instead of skipping", path=first.path,
                           where=str(first.line))


# --- plan -------------------------------------------------------------------------------------


def plan_prepare(task: TaskSpec, sources: dict[str, str], *, prompt_version: str | None = None, seed: int = 42,
                 max_samples: dict[str, int] | None = None, sample_strategy: str = "uniform",
                 val_size: float | int | None = None, test_size: float | int | None = None,
                 prefix: str | None = None, skip_malformed: bool = False, max_malformed: float = MAX_MALFORMED,
                 strict: bool = False, drop_overlap: bool = False, source_format: str | None = None,
                 config_path: str | Path | None = None, key_prefix: str = "--") -> Plan:
    """Read, check, clean, split and sample in memory; raise FtkError on anything wrong."""
    if not sources:
        raise FtkError("no data sources given: name at least one split (e.g. --test FILE)", path=config_path)
    prompt = task.prompt(prompt_version)
    max_samples = max_samples or {}

    def samples_key(split: str) -> str:
        return f"--max-samples {split}" if key_prefix == "--" else f"{key_prefix}max_samples.{split}"
    splits: dict[str, SplitData] = {}
    for split, source in sources.items():
        res = read_source(task, source, split, source_format, strict=strict)
        check_malformed(task, res, skip=skip_malformed, max_malformed=max_malformed)
        sd = SplitData(split, source, res.examples, res.malformed, Counter(), res.rows_read,
                       _counts(task, res.examples))
        if res.empty:
            sd.cleaning["empty"] = len(res.empty)
        if task.cleaning.drop_duplicates and task.kind != "pretrain":
            sd.examples, dup = drop_duplicates(sd.examples)
            sd.cleaning.update(dup)
        if task.cleaning.near_duplicate_rouge_l is not None:
            sd.examples, near = drop_near_duplicates(sd.examples, task.cleaning.near_duplicate_rouge_l)
            sd.cleaning["near_duplicates"] = near
        if not sd.examples:
            reasons = ", ".join(f"{k} {v}" for k, v in sd.cleaning.items())
            raise FtkError(f"no usable rows ({res.rows_read} read" + (f"; removed: {reasons}" if reasons else "")
                           + ")", path=source)
        splits[split] = sd

    for size, name in ((test_size, "test"), (val_size, "validation")):
        if not size:
            continue
        what = "test_size" if name == "test" else "val_size"
        key = f"{key_prefix}{what.replace('_', '-')}" if key_prefix == "--" else f"{key_prefix}{what}"
        train = splits.get("train")
        if train is None:
            raise FtkError(f"{what} needs a train split to take rows from", path=config_path, where=key)
        if name in splits:
            raise FtkError(f"{what} given but a {name} split was also given; use one of them",
                           path=config_path, where=key)
        if name == "validation" and "train" in max_samples:
            train.examples = sample(train.examples, max_samples["train"], seed, sample_strategy, path=config_path,
                                    key=samples_key("train"))
        train.examples, taken = split_off(train.examples, size, seed, what, path=config_path, key=key,
                                          strategy=sample_strategy)
        splits[name] = SplitData(name, train.source, taken, rows_read=len(taken))

    for sd in splits.values():
        if not (sd.name == "train" and val_size and "train" in max_samples):
            sd.examples = sample(sd.examples, max_samples.get(sd.name), seed, sample_strategy, path=config_path,
                                 key=samples_key(sd.name))
    warnings, overlap = _check_overlap(splits, strict=strict, drop=drop_overlap)
    return Plan(task, prompt, prompt_version or task.prompts.default, prefix or task.name, seed, sample_strategy,
                splits, warnings, overlap)


def _check_overlap(splits: dict[str, SplitData], *, strict: bool, drop: bool) -> tuple[list[str], dict]:
    """Inputs of validation/test that also appear in train: a warning by default, fatal under strict."""
    warnings: list[str] = []
    overlap: dict[str, int] = {}
    train = splits.get("train")
    if train is None:
        return warnings, overlap
    for name in ("validation", "test"):
        other = splits.get(name)
        if other is None:
            continue
        held_out = {norm_text(ex.input) for ex in other.examples}
        train_keys = {norm_text(ex.input) for ex in train.examples}
        shared = sum(norm_text(ex.input) in train_keys for ex in other.examples)
        overlap[f"{name}_in_train"] = shared
        if not shared:
            continue
        msg = (f"{shared} of {len(other.examples)} {name} rows ({shared / len(other.examples):.1%}) also appear "
               f"in train ({other.source} vs {train.source})")
        if strict:
            raise FtkError(msg + "; --strict forbids train/test overlap", path=other.source)
        if drop:
            before = len(train.examples)
            train.examples = [ex for ex in train.examples if norm_text(ex.input) not in held_out]
            dropped = before - len(train.examples)
            train.cleaning[f"overlap_with_{name}"] = dropped
            msg += f"; dropped {dropped} rows from train"
        warnings.append(msg)
    return warnings, overlap


# --- write ------------------------------------------------------------------------------------


def _malformed_summary(rows: list[Malformed]) -> dict:
    reasons = Counter(m.kind for m in rows)
    return {"count": len(rows), "by_reason": dict(sorted(reasons.items())),
            "first": [str(m) for m in rows[:20]]}


def check_out_dir(out_dir: Path) -> None:
    """The output must be ftk's own folder: new, empty, or a prepared/dataset folder, not the cwd."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FtkError("output exists and is not a folder (expected a folder for the prepared data)", path=out_dir)
    here = Path.cwd().resolve()
    if out_dir.resolve() == here or out_dir.resolve() in here.parents:
        raise FtkError("output folder contains the current directory (expected a folder below it)", path=out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (
            (out_dir / MANIFEST).exists() or (out_dir / dataset_info.DATASET_INFO).exists()):
        raise FtkError("output folder holds other files and no manifest.json / dataset_info.json "
                       "(expected a new folder or one made by ftk prepare)", path=out_dir)


def remove_leftovers(out_dir: Path) -> None:
    """Staging and replaced folders that a killed prepare left beside out_dir."""
    for p in out_dir.parent.glob(f".{out_dir.name}.staging-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in out_dir.parent.glob(f".{out_dir.name}.replaced-*"):
        shutil.rmtree(p, ignore_errors=True)


def _carry(item: Path, dest: Path) -> None:
    """Hard-link (or copy) a file or folder of the old output into the new one."""
    if item.is_dir():
        shutil.copytree(item, dest / item.name, copy_function=_link_or_copy)
    else:
        _link_or_copy(item, dest / item.name)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_prepared(plan: Plan, out_dir: str | Path, extra: dict | None = None) -> dict:
    """Write the plan into out_dir atomically (whole folder, manifest last); return the manifest.

    Entries of other datasets already in out_dir (files, dataset_info.json, manifest splits) are
    kept; the fitted copies of older data (fitted-*) are not. Another ftk writing the same folder
    goes first (`folder_lock`); its staging folder is never taken for a killed one's leftovers.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir)  # before the lock: a refused folder gets no lock file beside it
    with folder_lock(out_dir):
        return _write_prepared(plan, out_dir, extra)


def _write_prepared(plan: Plan, out_dir: Path, extra: dict | None) -> dict:
    check_out_dir(out_dir)  # again: it may have changed while this process waited
    old_manifest = _read_manifest(out_dir) if (out_dir / MANIFEST).exists() else {}
    old_info = dataset_info.read_dataset_info(out_dir) if out_dir.is_dir() else {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)  # under the lock: only a killed prepare's
    task = plan.task
    names = {sd.name: f"{plan.prefix}_{sd.name}" for sd in plan.splits.values()}
    regenerated = {f"{d}.jsonl" for d in names.values()} | {MANIFEST, dataset_info.DATASET_INFO}
    stage = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    stage.mkdir()
    try:
        if out_dir.is_dir():
            for item in sorted(out_dir.iterdir()):
                if item.name not in regenerated and not item.name.startswith(("fitted-", ".")):
                    _carry(item, stage)
        manifest = {k: v for k, v in old_manifest.items() if k != "recipe_fingerprint"}
        manifest.update({"task": task.name, "kind": task.kind, "prompt_version": plan.prompt_version,
                         "seed": plan.seed, "sample_strategy": plan.sample_strategy, "overlap": plan.overlap,
                         "warnings": plan.warnings, **(extra or {})})
        if task.path is not None:
            manifest["task_file"] = {"path": str(task.path), "sha256": task.sha256}
        manifest.setdefault("splits", {})
        info = dict(old_info)
        for sd in plan.splits.values():
            dataset = names[sd.name]
            file_name = f"{dataset}.jsonl"
            with atomic_open(stage / file_name) as fh:
                for i, ex in enumerate(sd.examples):
                    fh.write(json.dumps(to_record(task, plan.prompt, ex, f"{plan.prefix}-{sd.name}-{i:06d}"),
                                        ensure_ascii=False) + "\n")
                    if i == len(sd.examples) // 2:
                        fault_point(f"prepare:write:{sd.name}")
            info[dataset] = dataset_info.dataset_info_entry(file_name, pretrain=task.kind == "pretrain")
            manifest["splits"][sd.name] = {
                "dataset": dataset, "file": file_name, "sha256": sha256_file(stage / file_name),
                "rows": len(sd.examples), **_counts(task, sd.examples), "source": sd.source,
                "source_sha256": sha256_file(sd.source) if Path(sd.source).is_file() else None,
                "rows_read": sd.rows_read, "read_counts": sd.read_counts,
                "malformed": _malformed_summary(sd.malformed), "cleaning": dict(sorted(sd.cleaning.items())),
            }
        write_json(stage / dataset_info.DATASET_INFO, info)
        write_json(stage / MANIFEST, manifest)  # last: a folder with a manifest is complete
        replaced = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
        if out_dir.exists():
            os.rename(out_dir, replaced)
            fault_point("prepare:swap")
        os.rename(stage, out_dir)
        shutil.rmtree(replaced, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return manifest


def prepare(task: TaskSpec, sources: dict[str, str], out_dir: str | Path, *, extra: dict | None = None,
            **kwargs) -> dict:
    """Prepare the given splits ({split: path or hub:id}) into out_dir; return the manifest written.

    Malformed rows fail the prepare (exit code 2, first row and count named) unless
    `skip_malformed`, which drops and counts them within `max_malformed`; `strict` stops at the
    first one and also fails on train/test overlap.
    """
    plan = plan_prepare(task, sources, **kwargs)
    fault_point("prepare:read")
    return write_prepared(plan, out_dir, extra)


def _read_manifest(out_dir: Path) -> dict:
    path = out_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FtkError(f"not valid JSON: {getattr(exc, 'msg', exc)}", path=path,
                       where=str(getattr(exc, "lineno", "")) or None) from None
    if not isinstance(data, dict):
        raise FtkError("expected a JSON object (an ftk prepared-data manifest)", path=path)
    return data


def load_manifest(out_dir: str | Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise FtkError("prepared data not found (run `ftk prepare` first)", path=path)
    return _read_manifest(Path(out_dir))


def recipe_fingerprint(recipe) -> str:
    """Hash of everything that decides the prepared bytes: the task definition and `data`."""
    import hashlib

    from ftk.data.task import load_task

    task = load_task(recipe.task)
    blob = json.dumps({"task": task.model_dump(mode="json"), "data": recipe.data.model_dump(mode="json")},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def recipe_plan(recipe, *, strict: bool = False, skip_malformed: bool = False,
                max_malformed: float = MAX_MALFORMED, recipe_path: str | Path | None = None) -> Plan:
    """The in-memory prepare of a recipe's `task` and `data` (validation reads the data this way)."""
    from ftk.data.task import load_task

    d = recipe.data
    return plan_prepare(load_task(recipe.task), d.sources(), prompt_version=d.prompt_version, seed=d.seed,
                        max_samples=d.max_samples, sample_strategy=d.sample_strategy, val_size=d.val_size,
                        test_size=d.test_size, drop_overlap=d.drop_overlap, source_format=d.source_format,
                        strict=strict, skip_malformed=skip_malformed, max_malformed=max_malformed,
                        config_path=recipe_path, key_prefix="data.")


def prepare_recipe(recipe, *, strict: bool = False, skip_malformed: bool = False,
                   max_malformed: float = MAX_MALFORMED, recipe_path: str | Path | None = None) -> dict:
    """Prepare a recipe's data (its `task` and `data` sections) into `data.prepared_dir`."""
    plan = recipe_plan(recipe, strict=strict, skip_malformed=skip_malformed, max_malformed=max_malformed,
                       recipe_path=recipe_path)
    fault_point("prepare:read")
    return write_prepared(plan, recipe.data.prepared_dir, {"recipe_fingerprint": recipe_fingerprint(recipe)})
