"""`ftk synth-data SPEC.yaml`: training rows in a task's raw format from OpenAI-compatible endpoints.

Reads top to bottom: check the spec, the task, the seeds, the key variables and each endpoint (before
anything is written) -> plan the requests (deterministic) -> ask the missing ones (cache.jsonl, fsync'd
per answer) -> parse, validate and clean every cached answer in request order -> write the raw file,
rejects.jsonl and manifest.json atomically. The output folder holds: <name>.<ext> (the data: give it
to `ftk prepare` as a train source, alone or beside real data), rejects.jsonl, cache.jsonl and
manifest.json. No file holds an API key: only the names of the variables.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from ftk.data.llm.client import CACHE, failure_counts, read_cache, read_cache_counted, run_requests
from ftk.data.llm.items import clean, parse_answer, render, unwritable
from ftk.data.llm.spec import load_spec, plan_requests
from ftk.errors import FtkError
from ftk.fileio import atomic_open, sha256_file, write_json

EXT = {"csv": "csv", "tsv": "tsv", "at_lines": "txt", "text": "txt", "jsonl": "jsonl"}


def output_name(ld) -> str:
    return f"{ld.spec.name}.{EXT.get(ld.task.sources[ld.fmt].reader, 'txt')}"


def synth_data(spec_path: str | Path, out: str | Path | None = None) -> dict:
    ld = load_spec(spec_path)
    requests = plan_requests(ld)
    out_dir = Path(out) if out else Path("data") / "synthetic" / ld.spec.name
    if out_dir.exists() and not out_dir.is_dir():
        raise FtkError("output exists and is not a folder", path=out_dir)
    asyncio.run(_preflight(ld))
    out_dir.mkdir(parents=True, exist_ok=True)
    cached, unreadable = read_cache_counted(out_dir / CACHE)
    matching = sum(r.key in cached for r in requests)  # entries of other specs or settings do not count
    print(f"[ftk] {len(requests)} requests ({matching} cached"
          + (f"; {unreadable} unreadable cache lines skipped, their requests asked again" if unreadable else "")
          + ") to "
          f"{', '.join(f'{e.model} at {e.base_url}' for e in ld.spec.endpoints)}; output: {out_dir}", flush=True)
    seen: dict[int, int] = {}

    def on_answer(row: dict) -> int:  # items that pass validation, for the progress line
        if row["index"] not in seen:
            seen[row["index"]] = len(parse_answer(ld, row).kept)
        return seen[row["index"]]

    failures = asyncio.run(run_requests(ld, requests, out_dir / CACHE, on_answer))
    return finish(ld, requests, out_dir, failures)


async def _preflight(ld) -> None:
    from ftk.data.llm.client import preflight

    await preflight(ld)


FINAL = ("a well-formed answer with any text is final (cached, never asked again, even when no item in it "
         "is valid); an empty (no text at all), malformed or failed one is not cached: the next run asks it again")


def finish(ld, requests: list, out_dir: Path, failures: dict[int, tuple[str, str]]) -> dict:
    """Parse, validate, clean and write everything the cache holds for these requests; fewer than
    `min_items` kept: the manifest and rejects are written (the reasons), the data file is not, and the
    run fails with the reasons' counts."""
    cache = read_cache(out_dir / CACHE)
    counts, rejects, kept = Counter(), [], []
    tok_in = tok_out = 0
    for req in requests:  # request order: the same cache gives the same bytes
        row = cache.get(req.key)
        if row is None:
            continue
        tok_in += row.get("usage", {}).get("prompt_tokens") or 0
        tok_out += row.get("usage", {}).get("completion_tokens") or 0
        items = parse_answer(ld, row)
        counts.update(items.counts)
        counts["empty_answers"] += not items.counts["items"]
        rejects += items.rejects
        for ex, raw in items.kept:
            why = unwritable(ld, raw)
            if why is None:
                kept.append((ex, raw))
            else:
                rejects.append({"request": row["index"], "text": str(raw)[:2000], "reason": "unwritable",
                                "detail": why})
    parsed = len(kept)
    kept, cleaning = clean(ld, kept)
    reasons = Counter(r["reason"] for r in rejects)
    data_path = out_dir / output_name(ld)
    enough = len(kept) >= ld.spec.min_items
    if enough:
        with atomic_open(data_path) as fh:
            fh.write(render(ld, [raw for _, raw in kept]))
    with atomic_open(out_dir / "rejects.jsonl") as fh:
        for r in rejects:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    spec = ld.spec
    manifest = {
        "name": spec.name, "task": ld.task.name, "format": ld.fmt, "seed": spec.seed,
        "spec_file": str(ld.path), "spec": spec.model_dump(mode="json"),
        "endpoints": [{"base_url": e.base_url, "model": e.model, "weight": e.weight, "api_key_env": e.api_key_env}
                      for e in spec.endpoints],
        "requests": {"planned": len(requests), "answered": sum(r.key in cache for r in requests),
                     "empty": counts["empty_answers"], "failed": len(failures),
                     "failed_by_reason": failure_counts(failures),
                     "failures": {str(k): msg for k, (_, msg) in sorted(failures.items())[:20]}, "final": FINAL},
        "items": {"parsed": counts["items"], "valid": parsed, "kept": len(kept),
                  "rejected": dict(sorted(reasons.items())), "cleaning": dict(sorted(cleaning.items())),
                  "not_read": {k: counts[k] for k in ("over_max_items_per_answer",) if counts[k]}},
        "label_counts": dict(Counter(ex.label for ex, _ in kept)),
        "tokens": {"prompt": tok_in, "completion": tok_out},
        "output": ({"file": data_path.name, "sha256": sha256_file(data_path), "rows": len(kept)} if enough else
                   {"file": None, "rows": 0, "why": f"{len(kept)} items kept, min_items {ld.spec.min_items}"}),
    }
    write_json(out_dir / "manifest.json", manifest)
    if not enough:
        raise FtkError(f"{len(kept)} items kept, fewer than min_items {ld.spec.min_items}: "
                       + "; ".join(_why_lines(manifest)) + "; no data file written (rejects.jsonl, manifest.json)",
                       path=out_dir)
    return manifest


def _why_lines(m: dict) -> list[str]:
    it, rq = m["items"], m["requests"]
    out = [f"{rq['answered']}/{rq['planned']} requests answered ({rq['empty']} with no item)"]
    if rq["failed"]:
        out.append(f"{rq['failed']} failed: " + ", ".join(f"{k} x {v}" for k, v in rq["failed_by_reason"].items()))
    out.append(f"items {it['parsed']} parsed, {it['valid']} valid; rejected: "
               + (", ".join(f"{k} {v}" for k, v in it["rejected"].items()) or "none"))
    removed = ", ".join(f"{k} {v}" for k, v in it["cleaning"].items() if v)
    if removed:
        out.append(f"removed: {removed}")
    return out


def summary_lines(m: dict, out_dir: Path) -> list[str]:
    it = m["items"]
    rej = ", ".join(f"{k} {v}" for k, v in it["rejected"].items()) or "none"
    cl = ", ".join(f"{k} {v}" for k, v in it["cleaning"].items() if v) or "none"
    return [
        f"[ftk] requests {m['requests']['answered']}/{m['requests']['planned']} answered "
        f"({m['requests']['empty']} with no item), {m['requests']['failed']} failed"
        + (": " + ", ".join(f"{k} x {v}" for k, v in m["requests"]["failed_by_reason"].items())
           if m["requests"]["failed"] else "")
        + f"; tokens in {m['tokens']['prompt']:,} / out {m['tokens']['completion']:,}",
        f"[ftk] items {it['parsed']} parsed, {it['valid']} valid, {it['kept']} kept; rejected: {rej}; removed: {cl}",
        f"[ftk] output: {out_dir / m['output']['file']} ({m['output']['rows']} rows, "
        f"{', '.join(f'{k} {v}' for k, v in m['label_counts'].items())}); manifest: {out_dir / 'manifest.json'}",
    ]
