"""Raw examples -> LLaMA-Factory files + dataset_info.json + manifest.json.

Reads top to bottom: read every split -> clean (empty, duplicate, near-duplicate rows) -> split
off test / validation -> sample -> check train/test overlap -> write. Deterministic: the same
inputs, task, prompt version and seed give byte-identical files. Nothing is written until every
split has been read and checked, and each file is written atomically.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ftk.data import dataset_info, spans
from ftk.data.cleaning import drop_duplicates, drop_near_duplicates, norm_text
from ftk.data.records import to_record
from ftk.data.sources import Example, Malformed, read_source
from ftk.data.task import TaskSpec
from ftk.errors import FtkError
from ftk.fileio import atomic_open, sha256_file, write_json

MANIFEST = "manifest.json"


@dataclass
class SplitData:
    name: str
    source: str
    examples: list[Example]
    malformed: list[Malformed] = field(default_factory=list)
    cleaning: Counter = field(default_factory=Counter)
    rows_read: int = 0
    read_counts: dict = field(default_factory=dict)


# --- splitting and sampling -----------------------------------------------------------------


def _split_off(examples: list[Example], size: float | int, seed: int, what: str) -> tuple[list[Example], list[Example]]:
    n_out = int(round(size * len(examples))) if isinstance(size, float) and size < 1 else int(size)
    if not 0 < n_out < len(examples):
        raise FtkError(f"{what} {size} leaves no rows on one side ({len(examples)} rows)", where=what)
    rng = random.Random(f"{seed}-{what}")
    out_idx = set(rng.sample(range(len(examples)), n_out))
    keep = [e for i, e in enumerate(examples) if i not in out_idx]
    taken = [e for i, e in enumerate(examples) if i in out_idx]
    return keep, taken


def sample(examples: list[Example], n: int | None, seed: int, strategy: str = "uniform") -> list[Example]:
    """Seeded sample of n rows in original order; `stratified` keeps label proportions."""
    if n is None or n >= len(examples):
        return examples
    rng = random.Random(f"{seed}-sample")
    if strategy == "uniform":
        keep = sorted(rng.sample(range(len(examples)), n))
        return [examples[i] for i in keep]
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.label].append(i)
    total = len(examples)
    quotas = {k: n * len(v) / total for k, v in groups.items()}
    alloc = {k: int(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - alloc[k]), str(k)))[: n - sum(alloc.values())]:
        alloc[k] += 1
    keep = sorted(i for k in sorted(groups, key=str) for i in rng.sample(groups[k], alloc[k]))
    return [examples[i] for i in keep]


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


# --- the job --------------------------------------------------------------------------------


def prepare(
    task: TaskSpec,
    sources: dict[str, str],
    out_dir: str | Path,
    *,
    prompt_version: str | None = None,
    seed: int = 42,
    max_samples: dict[str, int] | None = None,
    sample_strategy: str = "uniform",
    val_size: float | int | None = None,
    test_size: float | int | None = None,
    prefix: str | None = None,
    skip_malformed: bool = False,
    strict: bool = False,
    drop_overlap: bool = False,
    source_format: str | None = None,
) -> dict:
    """Prepare the given splits ({split: path or hub:id}) and return the manifest written.

    Malformed rows fail the prepare (exit code 2, first row and count named) unless
    `skip_malformed`, which drops and counts them; `strict` stops at the first one and also
    fails on train/test overlap.
    """
    if not sources:
        raise FtkError("no data sources given: name at least one split (e.g. --test FILE)")
    out_dir = Path(out_dir)
    prefix = prefix or task.name
    prompt = task.prompt(prompt_version)
    version = prompt_version or task.prompts.default
    max_samples = max_samples or {}

    splits: dict[str, SplitData] = {}
    for split, source in sources.items():
        res = read_source(task, source, split, source_format, strict=strict)
        if res.malformed and not skip_malformed:
            first = res.malformed[0]
            raise FtkError(
                f"{first.reason} ({len(res.malformed)} malformed row(s) in this file; "
                "pass --skip-malformed to drop and count them)",
                path=first.path, where=str(first.line),
            )
        sd = SplitData(split, source, res.examples, res.malformed, Counter(), len(res.examples),
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
            raise FtkError("no usable rows", path=source)
        splits[split] = sd

    for size, name in ((test_size, "test"), (val_size, "validation")):
        if not size:
            continue
        what = "test_size" if name == "test" else "val_size"
        train = splits.get("train")
        if train is None:
            raise FtkError(f"{what} needs a train split", where=what)
        if name in splits:
            raise FtkError(f"{what} given but a {name} split was also given", where=what)
        if name == "validation" and "train" in max_samples:
            train.examples = sample(train.examples, max_samples["train"], seed, sample_strategy)
        train.examples, taken = _split_off(train.examples, size, seed, what)
        splits[name] = SplitData(name, train.source, taken, rows_read=len(taken))

    for sd in splits.values():
        if not (sd.name == "train" and val_size and "train" in max_samples):
            sd.examples = sample(sd.examples, max_samples.get(sd.name), seed, sample_strategy)

    warnings, overlap = _check_overlap(splits, strict=strict, drop=drop_overlap)

    manifest = _load_manifest(out_dir)
    manifest.update({"task": task.name, "kind": task.kind, "prompt_version": version, "seed": seed,
                     "sample_strategy": sample_strategy})
    manifest.setdefault("splits", {})
    manifest["overlap"] = overlap
    manifest["warnings"] = warnings
    info_entries = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for sd in splits.values():
        dataset = f"{prefix}_{sd.name}"
        file_name = f"{dataset}.jsonl"
        path = out_dir / file_name
        with atomic_open(path) as fh:
            for i, ex in enumerate(sd.examples):
                fh.write(json.dumps(to_record(task, prompt, ex, f"{prefix}-{sd.name}-{i:06d}"),
                                    ensure_ascii=False) + "\n")
        info_entries[dataset] = dataset_info.dataset_info_entry(file_name, pretrain=task.kind == "pretrain")
        manifest["splits"][sd.name] = {
            "dataset": dataset,
            "file": file_name,
            "sha256": sha256_file(path),
            "rows": len(sd.examples),
            **_counts(task, sd.examples),
            "source": sd.source,
            "source_sha256": sha256_file(sd.source) if Path(sd.source).is_file() else None,
            "rows_read": sd.rows_read,
            "read_counts": sd.read_counts,
            "malformed": _malformed_summary(sd.malformed),
            "cleaning": dict(sorted(sd.cleaning.items())),
        }
    dataset_info.update_dataset_info(out_dir, info_entries)
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def _check_overlap(splits: dict[str, SplitData], *, strict: bool, drop: bool) -> tuple[list[str], dict]:
    """Inputs of validation/test that also appear in train: loud by default, fatal under strict."""
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
            raise FtkError(msg + "; --strict forbids train/test overlap", where=name)
        if drop:
            before = len(train.examples)
            train.examples = [ex for ex in train.examples if norm_text(ex.input) not in held_out]
            dropped = before - len(train.examples)
            train.cleaning[f"overlap_with_{name}"] = dropped
            msg += f"; dropped {dropped} rows from train"
        warnings.append(msg)
        print(f"WARNING: {msg}", file=sys.stderr)
    return warnings, overlap


def _malformed_summary(rows: list[Malformed]) -> dict:
    reasons = Counter(m.kind for m in rows)
    return {"count": len(rows), "by_reason": dict(sorted(reasons.items())),
            "first": [str(m) for m in rows[:20]]}


def _load_manifest(out_dir: Path) -> dict:
    path = out_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FtkError(f"not valid JSON: {exc.msg}", path=path, where=str(exc.lineno)) from None


def load_manifest(out_dir: str | Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise FtkError("prepared data not found (run `ftk prepare` first)", path=path)
    return _load_manifest(Path(out_dir))


def recipe_fingerprint(recipe) -> str:
    """Hash of everything that decides the prepared bytes: the task definition and `data`."""
    import hashlib

    from ftk.data.task import load_task

    task = load_task(recipe.task)
    blob = json.dumps({"task": task.model_dump(mode="json"), "data": recipe.data.model_dump(mode="json")},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_recipe(recipe, *, strict: bool = False, skip_malformed: bool = False) -> dict:
    """Prepare a recipe's data (its `task` and `data` sections) into `data.prepared_dir`."""
    from ftk.data.task import load_task

    d = recipe.data
    manifest = prepare(load_task(recipe.task), d.sources(), d.prepared_dir, prompt_version=d.prompt_version,
                       seed=d.seed, max_samples=d.max_samples, sample_strategy=d.sample_strategy,
                       val_size=d.val_size, test_size=d.test_size, drop_overlap=d.drop_overlap,
                       source_format=d.source_format, strict=strict, skip_malformed=skip_malformed)
    manifest["recipe_fingerprint"] = recipe_fingerprint(recipe)
    write_json(Path(d.prepared_dir) / MANIFEST, manifest)
    return manifest
