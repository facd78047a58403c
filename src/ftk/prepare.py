"""Raw examples -> LLaMA-Factory alpaca files + dataset_info.json + manifest.json.

Deterministic: the same inputs, task, prompt version and seed give byte-identical files.
Nothing is written until every split has been read and checked, and each file is written
atomically, so a failed prepare leaves the output folder as it was.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ftk import llamafactory
from ftk.errors import FtkError
from ftk.fileio import atomic_open, sha256_file, write_json
from ftk.sources import Example, Malformed, ReadResult, read_source
from ftk.tasks import TaskSpec

MANIFEST = "manifest.json"


@dataclass
class SplitData:
    name: str
    source: str
    examples: list[Example]
    malformed: list[Malformed]


def _sample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return examples
    rng = random.Random(seed)
    keep = sorted(rng.sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def _split_off(examples: list[Example], size: float | int, seed: int) -> tuple[list[Example], list[Example]]:
    n_val = int(round(size * len(examples))) if isinstance(size, float) and size < 1 else int(size)
    if not 0 < n_val < len(examples):
        raise FtkError(f"val_size {size} leaves no train or no validation rows ({len(examples)} rows)",
                       where="val_size")
    rng = random.Random(seed)
    val_idx = set(rng.sample(range(len(examples)), n_val))
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    val = [e for i, e in enumerate(examples) if i in val_idx]
    return train, val


def to_record(task: TaskSpec, instruction: str, example: Example, rid: str) -> dict:
    return {
        "id": rid,
        "instruction": instruction,
        "input": example.input,
        "output": task.target_for(example.label),
        "label": example.label,
    }


def prepare(
    task: TaskSpec,
    sources: dict[str, str],
    out_dir: str | Path,
    *,
    prompt_version: str | None = None,
    seed: int = 42,
    max_samples: dict[str, int] | None = None,
    val_size: float | int | None = None,
    prefix: str | None = None,
    skip_malformed: bool = False,
    source_format: str | None = None,
) -> dict:
    """Prepare the given splits ({split: path or hub:id}) and return the manifest written.

    Malformed rows fail the whole prepare (exit code 2, first row named) unless
    `skip_malformed`, in which case they are dropped and counted per split and reason.
    """
    if not sources:
        raise FtkError("no data sources given: name at least one split (e.g. --test FILE)")
    out_dir = Path(out_dir)
    prefix = prefix or task.name
    instruction = task.prompt(prompt_version)
    version = prompt_version or task.prompts.default
    max_samples = max_samples or {}

    splits: list[SplitData] = []
    for split, source in sources.items():
        res: ReadResult = read_source(task, source, split, source_format)
        if res.malformed and not skip_malformed:
            first = res.malformed[0]
            raise FtkError(
                f"{first.reason} ({len(res.malformed)} malformed row(s) in this file; "
                "pass --skip-malformed to drop and count them)",
                path=first.path, where=str(first.line),
            )
        if not res.examples:
            raise FtkError("no usable rows", path=source)
        splits.append(SplitData(split, source, res.examples, res.malformed))

    if val_size:
        train = next((s for s in splits if s.name == "train"), None)
        if train is None:
            raise FtkError("val_size needs a train split", where="val_size")
        if any(s.name == "validation" for s in splits):
            raise FtkError("val_size given but a validation split was also given", where="val_size")
        train.examples, val = _split_off(train.examples, val_size, seed)
        splits.append(SplitData("validation", train.source, val, []))

    manifest = _load_manifest(out_dir)
    manifest.update({"task": task.name, "prompt_version": version, "seed": seed})
    manifest.setdefault("splits", {})
    info_entries = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for sd in splits:
        examples = _sample(sd.examples, max_samples.get(sd.name), seed)
        dataset = f"{prefix}_{sd.name}"
        file_name = f"{dataset}.jsonl"
        path = out_dir / file_name
        with atomic_open(path) as fh:
            for i, ex in enumerate(examples):
                rec = to_record(task, instruction, ex, f"{prefix}-{sd.name}-{i:06d}")
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        info_entries[dataset] = llamafactory.dataset_info_entry(file_name)
        counts = Counter(ex.label for ex in examples)
        manifest["splits"][sd.name] = {
            "dataset": dataset,
            "file": file_name,
            "sha256": sha256_file(path),
            "rows": len(examples),
            "label_counts": {lab: counts.get(lab, 0) for lab in task.labels},
            "source": sd.source,
            "source_sha256": sha256_file(sd.source) if Path(sd.source).is_file() else None,
            "rows_read": len(sd.examples),
            "malformed": _malformed_summary(sd.malformed),
        }
    llamafactory.update_dataset_info(out_dir, info_entries)
    write_json(out_dir / MANIFEST, manifest)
    return manifest


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


def read_records(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
