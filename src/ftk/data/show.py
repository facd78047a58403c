"""`ftk tasks show`: what a task's prompt and target look like, for a person to read."""

from __future__ import annotations

from pathlib import Path

from ftk.data.prepare import load_manifest
from ftk.data.records import read_records, to_record, user_content
from ftk.data.rows import Example
from ftk.data.sources import fields_in, read_source
from ftk.data.task import load_task
from ftk.errors import FtkError


def _render(split: str, rec: dict) -> str:
    if "text" in rec and "instruction" not in rec:
        return f"== {split} ==\n--- text ---\n{rec['text']}\n"
    return f"== {split} ==\n--- prompt (user turn) ---\n{user_content(rec)}\n--- target ---\n{rec['output']}\n"


def show(task_name: str, *, data: Path | None = None, file: str | None = None,
         prompt_version: str | None = None) -> str:
    task = load_task(task_name)
    out = [f"task {task.name} ({task.kind}): {task.description}\n"]
    if data is not None:
        manifest = load_manifest(data)
        for split, info in manifest["splits"].items():
            recs = read_records(Path(data) / info["file"])
            if recs:
                out.append(_render(split, recs[0]))
        return "\n".join(out)
    prompt = task.prompt(prompt_version)
    if file is not None:
        res = read_source(task, file, "test")
        if not res.examples:
            raise FtkError("no usable rows", path=file)
        out.append(_render(Path(file).name, to_record(task, prompt, res.examples[0], f"{task.name}-example")))
        return "\n".join(out)
    spec = next(iter(task.sources.values()))
    placeholder = spec.input.format(**{f: f"<{f}>" for f in fields_in(spec.input)})
    target = task.target_for(task.labels[0]) if task.is_classification else "<target>"
    ex = Example(line=0, input=placeholder, target=target, label=task.labels[0] if task.labels else None,
                 meta={"tokens": [], "tags": [], "task_type": "", "metric": "", "gold": None})
    out.append(_render("example", to_record(task, prompt, ex, f"{task.name}-example")))
    return "\n".join(out)
