"""The prepared record format: one alpaca JSON object per line (id, instruction, input, output,
plus the gold fields scoring needs: label, tokens/tags, task_type/metric/gold), or {id, text} for
stage pt. Written by prepare, read by train (through LLaMA-Factory) and eval."""

from __future__ import annotations

import json
from pathlib import Path

from ftk.data.rows import Example
from ftk.data.task import TaskSpec


def user_content(record: dict) -> str:
    """LLaMA-Factory's alpaca converter joins instruction and input with one newline."""
    return "\n".join(x for x in (record.get("instruction"), record.get("input")) if x)


def to_record(task: TaskSpec, prompt: str, ex: Example, rid: str) -> dict:
    """One output row. A prompt holding `{input}` embeds the text; else it is the instruction."""
    if task.kind == "pretrain":
        return {"id": rid, "text": ex.input}
    if "{input}" in prompt:
        instruction, inp = prompt.replace("{input}", ex.input), ""
    elif prompt:
        instruction, inp = prompt, ex.input
    else:
        instruction, inp = ex.input, ""
    rec = {"id": rid, "instruction": instruction, "input": inp, "output": ex.target}
    if "source_id" in ex.meta:  # the source's own row id (task `id_column`), carried into predictions
        rec["source_id"] = ex.meta["source_id"]
    if task.is_classification:
        rec["label"] = ex.label
    elif task.kind == "ner":
        rec["tokens"] = ex.meta["tokens"]
        rec["tags"] = ex.meta["tags"]
    elif task.kind == "shopbench":
        # JSON text: gold is an int, a list or a string by row, and arrow needs one type per column.
        rec.update({"task_type": ex.meta["task_type"], "metric": ex.meta["metric"],
                    "gold": json.dumps(ex.meta["gold"], ensure_ascii=False)})
    return rec


def read_records(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
