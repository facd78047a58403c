"""`ftk study run STUDY.yaml`: every trial is a normal `ftk train` + `ftk eval` run in the study
folder; a finished trial leaves `trials/<id>.json`, so a re-run skips it and an interrupted study
resumes with the missing trials only (same seeds -> the same table). `--dry-run` lists the trials,
`--slurm` submits them as one SLURM job array (one trial per array task), `strategy: optuna`
searches with Optuna (its storage in the study folder), and the report is written at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftk.data.prepare import recipe_fingerprint
from ftk.errors import FtkError, TrainingFailed
from ftk.fileio import write_json, write_text
from ftk.recipe import load_recipe
from ftk.study.spec import StudySpec, as_overrides, base_row_overrides, load_study, trial_id, trial_overrides
from ftk.study.state import is_done, portable, state_path


@dataclass
class Trial:
    id: str
    varied: dict[str, Any]
    overrides: list[str] = field(default_factory=list)  # the study's, the trial's, and the folders'
    base: bool = False
    mode: str | None = None  # a `bases` row: its eval mode and in-context examples
    shots: int | None = None
    baseline: str | None = None  # a `baselines` row: tfidf or majority
    served: Any = None  # a `bases` row answered by a served model (spec.ServedRow)


def study_dir(spec: StudySpec, out: str | Path | None = None) -> Path:
    return Path(out) if out else Path("runs") / f"study-{spec.name}"


def _trial(spec: StudySpec, recipe_path: Path, sdir: Path, tid: str, varied: dict, base: bool = False,
           overrides: list[str] | None = None, **kind) -> Trial:
    overrides = list(spec.overrides) + as_overrides(varied) if overrides is None else overrides
    r = load_recipe(recipe_path, overrides)
    # Trials that prepare the same data share it; trials that change data keys get their own folder.
    folders = [f"runs_dir={sdir / 'runs'}", f"name={spec.name}-{tid}",
               f"data.prepared_dir={sdir / 'prepared' / recipe_fingerprint(r.stage_recipes()[-1][1])}"]
    if r.stages:  # a chain keeps each stage's own prepared folder
        folders = folders[:2]
    return Trial(tid, varied, overrides + folders, base, **kind)


def plan_trials(spec: StudySpec, recipe_path: Path, sdir: Path) -> list[Trial]:
    """The base rows and baselines (when asked), then the grid trials, in a fixed order."""
    trials = [_trial(spec, recipe_path, sdir, "base", {}, base=True)] if spec.base else []
    trials += [_trial(spec, recipe_path, sdir, row.id, {}, base=True, mode=row.mode, shots=row.shots,
                      served=row.served, overrides=base_row_overrides(spec, recipe_path, row)) for row in spec.bases]
    trials += [_trial(spec, recipe_path, sdir, f"baseline-{b}", {}, baseline=b) for b in spec.baselines]
    if spec.strategy == "grid":
        trials += [_trial(spec, recipe_path, sdir, trial_id(i, v), v) for i, v in enumerate(trial_overrides(spec))]
    return trials


# Keys that name where a trial's files go, or what it asks a scheduler for, not what it trains or evaluates.
_WHERE_KEYS = ("name", "runs_dir", "data.prepared_dir")
_SCHEDULER = "distributed.slurm."


def _flat(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def trial_identity(trial: Trial, spec: StudySpec, recipe_path: Path) -> dict:
    """What a trial's result depends on: its resolved recipe (every key, flattened; not the folders it
    writes to), the task file's sha256 and the study's evaluation settings. A trial recorded as done
    is reused only when this is equal."""
    from ftk.data.task import load_task

    r = load_recipe(recipe_path, trial.overrides)
    flat = {k: v for k, v in _flat(r.model_dump(mode="json")).items()
            if k not in _WHERE_KEYS and not k.endswith((".prepared_dir", ".runs_dir")) and _SCHEDULER not in k}
    try:
        flat["task_sha256"] = load_task(r.stage_recipes()[-1][1].task).sha256
    except FtkError:
        flat["task_sha256"] = None
    flat.update({f"study.eval.{k}": v for k, v in _flat(spec.eval.model_dump(mode="json")).items()})
    if trial.mode or trial.shots:  # a `bases` row
        flat.update({"base.mode": trial.mode, "base.shots": trial.shots})
    if trial.served is not None:  # the served model answers: its server and name (never a key)
        flat.update({f"base.served.{k}": v for k, v in trial.served.model_dump(mode="json").items()
                     if k != "concurrency"})
    if trial.baseline:
        flat["baseline"] = trial.baseline
    return json.loads(json.dumps(flat))  # as it reads back from the state file (tuples -> lists)


def check_done(trial: Trial, spec: StudySpec, recipe_path: Path, sdir: Path) -> bool:
    """Whether the trial is recorded as done with the same identity; FtkError (one line) when it is
    recorded with another (the study file, recipe, task or evaluation changed since)."""
    from ftk.eval.identity import differences
    from ftk.study.state import read_state

    if not is_done(sdir, trial.id):
        return False
    path = state_path(sdir, trial.id)
    state = read_state(path)
    hint = f"run the study into another --out folder, or remove {path} to run this trial again"
    recorded = state.get("identity")
    if not isinstance(recorded, dict):
        raise FtkError(f"trial {trial.id} is recorded as done without the settings it ran with (an older ftk), so "
                       f"it cannot be reused as this study's; {hint}", path=path)
    recorded = {k: v for k, v in recorded.items() if _SCHEDULER not in k}  # recorded by an ftk that kept them
    diff = differences(recorded, trial_identity(trial, spec, recipe_path))
    if diff:
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise FtkError(f"trial {trial.id} is recorded as done with other settings ({'; '.join(diff[:3])}{more}); "
                       f"reusing it would report another setting's result; {hint}", path=path)
    return True


def run_trial(trial: Trial, spec: StudySpec, recipe_path: Path, sdir: Path) -> dict:
    """Train (or, for the base row, make the base folder) and evaluate; record the trial as done."""
    from ftk.eval.base import make_base_run
    from ftk.eval.evaluate import evaluate_run
    from ftk.train.run import train
    from ftk.validate import check_for_training

    if trial.baseline:
        return _run_baseline(trial, spec, recipe_path, sdir)
    recipe = check_for_training(recipe_path, trial.overrides)
    # The trials of a study are one W&B group: set in the trainer's environment, never in ftk's own.
    extra_env = {"WANDB_RUN_GROUP": spec.name} if recipe.tracking.report_to == "wandb" else None
    what = (f"{'the served model ' + trial.served.model if trial.served else 'the base model'} ({trial.mode}"
            + (f", {trial.shots} examples in context)" if trial.shots else ")")
            if trial.mode else "the base model") if trial.base else (", ".join(as_overrides(trial.varied)) or "the recipe as it is")
    print(f"[study] trial {trial.id}: {what}", flush=True)
    identity = trial_identity(trial, spec, recipe_path)
    try:
        if trial.base:
            run_dir = make_base_run(recipe, recipe_path, trial.overrides, runs_dir=sdir / "runs")
        else:
            run_dir = train(recipe, recipe_path, trial.overrides, extra_env=extra_env)
    except TrainingFailed as exc:
        raise TrainingFailed(f"study {spec.name}: trial {trial.id} failed ({exc}); finished trials are kept: run "
                             "the study again to resume", exc.code) from None
    served = None
    if trial.served is not None:
        from ftk.eval.served import ServedModel

        served = ServedModel(**trial.served.model_dump())
    metrics, eval_dir = evaluate_run(run_dir, split=spec.eval.split, mode=trial.mode or spec.eval.mode,
                                     limit=spec.eval.limit, shots=trial.shots, served=served,
                                     engine="openai" if served else "hf")
    return _done(trial, sdir, run_dir, eval_dir, metrics, identity)


def _done(trial: Trial, sdir: Path, run_dir: Path, eval_dir: Path, metrics: dict, identity: dict) -> dict:
    head = metrics["headline"]
    state = {"id": trial.id, "varied": trial.varied, "overrides": trial.overrides, "base": trial.base,
             "run_dir": portable(sdir, run_dir), "eval_dir": portable(sdir, eval_dir), "headline": head,
             "value": metrics[head], "identity": identity}
    if trial.baseline:
        state["baseline"] = trial.baseline
    write_json(state_path(sdir, trial.id), state)
    print(f"[study] trial {trial.id} done: {head} {metrics[head]:.4f}", flush=True)
    return state


def _run_baseline(trial: Trial, spec: StudySpec, recipe_path: Path, sdir: Path) -> dict:
    """A `baselines` row: `ftk baseline` on the study's prepared data, into the study folder."""
    from ftk.eval.baseline import run_baseline
    from ftk.validate import check_for_prepare

    print(f"[study] trial {trial.id}: the {trial.baseline} baseline", flush=True)
    identity = trial_identity(trial, spec, recipe_path)
    recipe = check_for_prepare(recipe_path, trial.overrides)
    run_dir = sdir / "baselines" / trial.baseline
    split = spec.eval.split
    metrics, eval_dir = run_baseline(trial.baseline, recipe, recipe_path, out_dir=run_dir / f"eval-{split}",
                                     split=split, limit=spec.eval.limit)
    return _done(trial, sdir, run_dir, eval_dir, metrics, identity)


def keep_study_copy(path: Path, recipe_path: Path, sdir: Path) -> None:
    """sdir/study.yaml: the study as it was run, its recipe path made absolute so that the copy reads
    the same from anywhere (a SLURM array's tasks run it). Written atomically; left alone when `path`
    is the copy itself (an array task)."""
    copy = sdir / "study.yaml"
    if copy.exists() and copy.resolve() == path.resolve():
        return
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raw["recipe"] = str(recipe_path.resolve())
    write_text(copy, f"# copy of {path.resolve()} as run (recipe path made absolute)\n"
               + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


MANY_TRIALS = 64  # more trials than this: said up front, run only with --yes


def run_study(path: str | Path, *, out: str | Path | None = None, dry_run: bool = False, slurm: bool = False,
              only: int | None = None, yes: bool = False) -> Path:
    spec, recipe_path = load_study(path)
    sdir = study_dir(spec, out)
    trials = plan_trials(spec, recipe_path, sdir)
    if dry_run:
        print(dry_run_table(spec, trials, sdir), end="")
        return sdir
    if slurm and spec.strategy == "optuna":
        raise FtkError("an Optuna search asks for each trial after the last one finished: run it without "
                       "--slurm (inside one SLURM job if you like)", path=path, where="strategy")
    if only is not None and not 0 <= only < len(trials):
        raise FtkError(f"--trial {only}: the study has trials 0..{len(trials) - 1}")
    n = len(trials) + (spec.optuna.trials if spec.optuna else 0)
    if n > MANY_TRIALS and not yes and only is None:
        raise FtkError(f"{n} trials, each a training and an evaluation (more than {MANY_TRIALS}): check them with "
                       "--dry-run, then run with --yes", path=path)
    if only is None and not sdir.exists():
        from ftk.validate import check_for_training  # files, model, data: before the study folder exists

        first = next((t for t in trials if not (t.base or t.baseline)), None)
        check_for_training(recipe_path, first.overrides if first else spec.overrides)
    # trials recorded as done must have run with these settings: checked before the folder is touched
    done = {t.id for i, t in enumerate(trials) if (only is None or i == only) and check_done(t, spec, recipe_path, sdir)}
    sdir.mkdir(parents=True, exist_ok=True)
    keep_study_copy(Path(path), recipe_path, sdir)
    if slurm:
        from ftk.study.slurm import submit_array

        submit_array(spec, path, recipe_path, trials, sdir)
        return sdir
    if only is not None:  # one array task of a SLURM study
        if trials[only].id not in done:
            run_trial(trials[only], spec, recipe_path, sdir)
        return sdir
    todo = [t for t in trials if t.id not in done]
    if len(todo) < len(trials):
        print(f"[study] {len(trials) - len(todo)} of {len(trials)} trial(s) already done; running the rest", flush=True)
    for t in todo:
        run_trial(t, spec, recipe_path, sdir)
    if spec.strategy == "optuna":
        run_optuna(spec, recipe_path, sdir)
    from ftk.study.report import print_report, study_report

    print_report(study_report(sdir))
    return sdir


def run_optuna(spec: StudySpec, recipe_path: Path, sdir: Path) -> None:
    """Optuna's own search (TPE, seeded), its storage in the study folder: an interrupted search
    continues where it stopped; each Optuna trial is a normal ftk trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    o = spec.optuna
    study = optuna.create_study(study_name=spec.name, storage=f"sqlite:///{(sdir / 'optuna.db').resolve()}",
                                load_if_exists=True, direction=o.direction,
                                sampler=optuna.samplers.TPESampler(seed=o.seed))
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # killed mid-trial: tried again
    if study.trials:  # resumed: a sampler seeded as at the start would draw the first trials' values again
        study.sampler = optuna.samplers.TPESampler(seed=o.seed + len(study.trials))
    complete = lambda: len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))  # noqa: E731
    while complete() < o.trials:
        ot = study.ask()
        varied = {}
        for key, p in o.params.items():
            if p.choices is not None:
                varied[key] = ot.suggest_categorical(key, p.choices)
            elif p.integer:
                varied[key] = ot.suggest_int(key, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
            else:
                varied[key] = ot.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
        trial = _trial(spec, recipe_path, sdir, f"o{ot.number:03d}", varied)
        state = run_trial(trial, spec, recipe_path, sdir)
        study.tell(ot.number, state["value"])


def dry_run_table(spec: StudySpec, trials: list[Trial], sdir: Path) -> str:
    lines = [f"study {spec.name}: {len(trials)} trial(s) in {sdir}" +
             (f", then {spec.optuna.trials} Optuna trial(s) over {', '.join(spec.optuna.params)}"
              if spec.strategy == "optuna" else ""), ""]
    for i, t in enumerate(trials):
        what = ("base model (no training)" + (f", {t.mode}" if t.mode else "") + (f", {t.shots}-shot" if t.shots else "")
                if t.base else f"{t.baseline} baseline" if t.baseline else " ".join(as_overrides(t.varied)) or
                "the recipe as it is")
        lines.append(f"{i:3d}  {t.id:18}  {what}{'  (done)' if is_done(sdir, t.id) else ''}")
    common = " ".join(spec.overrides)
    if common:
        lines += ["", f"every trial: {common}"]
    return "\n".join(lines) + "\n"
