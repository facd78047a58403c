"""`ftk eval RECIPE --base`: the recipe's model before any training, on the recipe's prepared test
split, for every method and task kind, in a run-like folder (`runs/<name>-base-<timestamp>/`) that
`ftk eval`, `ftk compare` and studies treat like any run.

Base models do not answer in the trained format: the task's `base_instruction` is prepended to the
user turn and its `base_extraction` (or the usual extraction, which already takes the first label
mentioned anywhere) reads the answer; what still cannot be parsed is invalid and counts as wrong.
A classification head is the base model's untrained (seeded random) head: near chance by design.
Prompt tuning's base is the model without virtual tokens.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from ftk.errors import FtkError
from ftk.fileio import write_json
from ftk.recipe import Recipe
from ftk.train import runs
from ftk.train.run import ensure_model, ensure_prepared


def model_loadable(recipe: Recipe, recipe_path: str | Path) -> None:
    """A model named by a Hub id must have a config there or in the local cache (offline: the cache
    only, decided by one probe instead of the Hub client's retries); one line otherwise."""
    import contextlib

    name = recipe.model.name_or_path
    if Path(name).exists():
        return
    from ftk.data.sources import hub_offline, hub_reachable

    online = hub_reachable()
    try:
        from transformers import AutoConfig

        with contextlib.nullcontext() if online else hub_offline():
            AutoConfig.from_pretrained(name, trust_remote_code=recipe.model.trust_remote_code)
    except Exception as exc:
        where = "the Hub" if online else "the local Hugging Face cache (the Hub is unreachable)"
        why = (str(exc).strip().splitlines() or [""])[0][:160]
        raise FtkError(f"`model.name_or_path` {name!r}: not a local folder, and loading it from {where} failed "
                       f"({type(exc).__name__}: {why})", path=recipe_path) from None


def make_base_run(recipe: Recipe, recipe_path: str | Path, overrides: list[str] | None = None, *,
                  runs_dir: str | Path | None = None) -> Path:
    """Prepare the data (and a tiny model), then a base "run" folder: manifest, task and data copies."""
    last = recipe.stage_recipes()[-1][1]
    if not (last.model.tiny or last.model.fetch):  # before anything is written: no data, no folder
        model_loadable(last, recipe_path)
    data = ensure_prepared(last, recipe_path)
    ensure_model(recipe)
    run_dir = runs.new_run_dir(runs_dir or recipe.runs_dir, f"{recipe.name}-base")
    manifest = {
        "kind": "base",
        "name": f"{recipe.name}-base",
        "recipe_path": str(recipe_path),
        "overrides": overrides or [],
        "recipe": last.model_dump(mode="json"),
        "model_dir": last.model.name_or_path,
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "status": "finished",
        "data": data,
        "task": runs.keep_task_copy(run_dir, last.task),
        "git_commit": runs.git_commit(),
        "versions": runs.package_versions(),
        "device": runs.device_info(),
        **runs.process_identity(),
    }
    write_json(run_dir / runs.DATA_MANIFEST, data)
    runs.write_manifest(run_dir, manifest)
    return run_dir
