"""Study files: trial expansion, dry run, the SLURM job array, and every shipped study validates."""

from pathlib import Path

import pytest
import yaml

from conftest import REPO
from ftk.errors import FtkError
from ftk.study.run import plan_trials
from ftk.study.slurm import render_array
from ftk.study.spec import StudySpec, as_overrides, load_study, trial_overrides

STUDIES = sorted((REPO / "studies").rglob("*.yaml"))


def spec(**kw) -> StudySpec:
    return StudySpec.model_validate({"name": "s", "recipe": "r.yaml", **kw})


def test_grid_times_paired_groups():
    s = spec(grid={"train.learning_rate": [1e-3, 1e-4], "train.seed": [1, 2]},
             paired=[{"model.name_or_path": ["a/b", "c/d"], "model.template": ["llama3", "qwen"]}])
    trials = trial_overrides(s)
    assert len(trials) == 2 * 2 * 2
    assert trials[0] == {"train.learning_rate": 1e-3, "train.seed": 1, "model.name_or_path": "a/b",
                         "model.template": "llama3"}
    assert {(t["model.name_or_path"], t["model.template"]) for t in trials} == {("a/b", "llama3"), ("c/d", "qwen")}
    assert as_overrides({"train.learning_rate": 1e-3, "data.prompt_version": "v2", "x": [1, 2]}) == [
        "train.learning_rate=0.001", "data.prompt_version=v2", "x=[1, 2]"]


def test_no_axes_is_the_recipe_itself_and_bad_specs_are_refused():
    assert trial_overrides(spec(base=True)) == [{}]
    for bad, msg in (({}, "nothing to vary"), ({"paired": [{"a": [1, 2], "b": [1]}]}, "one length"),
                     ({"strategy": "optuna"}, "needs an `optuna` section"), ({"name": "a b", "base": True}, "valid study name")):
        with pytest.raises(ValueError, match=msg):
            spec(**bad)


def test_a_typo_in_an_axis_fails_before_anything_runs(tmp_path):
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump({"name": "x", "recipe": str(REPO / "configs" / "agnews_tiny_cpu.yaml"),
                                 "grid": {"train.learnig_rate": [1e-3]}}))
    with pytest.raises(FtkError, match=r"study.yaml: a trial's recipe does not validate.*`train.learnig_rate`: unknown key"):
        load_study(f)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_shipped_study_validates(path, monkeypatch):
    monkeypatch.chdir(REPO)
    s, recipe = load_study(path)
    assert s.name == path.stem and recipe.is_file()
    if path.parent.name == "real":  # real-model studies run on this CPU as they are: no twin
        from ftk.recipe import load_recipe

        assert load_recipe(recipe).model.fetch  # they fetch their real model on first use
    elif path.stem.endswith("_tiny"):
        assert (REPO / "studies" / f"{path.stem[:-5]}.yaml").is_file(), "a twin without its original"
    else:
        assert (REPO / "studies" / f"{path.stem}_tiny.yaml").is_file(), "every study has a CPU twin"


def test_dry_run_lists_trials_and_writes_nothing(tmp_path):
    from ftk.study.run import run_study

    out = tmp_path / "study"
    run_study(REPO / "studies" / "s0_agnews_lr_tiny.yaml", out=out, dry_run=True)
    assert not out.exists()


def test_slurm_job_array_script_for_a_four_trial_study(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    study = REPO / "studies" / "s0_agnews_lr.yaml"
    s, recipe = load_study(study)
    sdir = Path("/scratch/me/study-s0_agnews_lr")
    trials = plan_trials(s, recipe, sdir)
    assert len(trials) == 4
    text = render_array(s, study, recipe, trials, sdir, python="/opt/venv/bin/python", workdir="/home/me/ftk")
    ids = ", ".join(f"{i}={t.id}" for i, t in enumerate(trials))
    assert text == f"""#!/bin/bash
#SBATCH --job-name=s0_agnews_lr
#SBATCH --array=0-3
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --output=/scratch/me/study-s0_agnews_lr/slurm-%A_%a.out

set -euo pipefail
cd /home/me/ftk
export PATH=/opt/venv/bin:$PATH
export PYTHONWARNINGS=ignore::FutureWarning
export WANDB_RUN_GROUP=s0_agnews_lr

# one trial per array task: {ids}
ftk study run /scratch/me/study-s0_agnews_lr/study.yaml --out /scratch/me/study-s0_agnews_lr --trial "$SLURM_ARRAY_TASK_ID"
"""
    assert [t.id for t in trials] == [t.id for t in plan_trials(s, recipe, sdir)]  # stable ids


def test_slurm_study_writes_the_script_without_sbatch(tmp_path, monkeypatch):
    from ftk.study.run import run_study

    import sys

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no sbatch, whatever this host has
    out = tmp_path / "study"
    run_study(REPO / "studies" / "s0_agnews_gradacc.yaml", out=out, slurm=True)
    script = (out / "study.sbatch").read_text()
    assert "#SBATCH --array=0-1" in script and (out / "study.yaml").is_file()
    assert not (out / "trials").exists()  # nothing ran here


def test_a_resumed_optuna_search_asks_new_values(tmp_path, monkeypatch):
    """Interrupted after two trials and run again to four, the search draws new learning rates (a
    sampler seeded as at the start replayed the first two exactly)."""
    import ftk.study.run as study_run

    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump({"name": "o", "recipe": str(REPO / "configs" / "agnews_tiny_cpu.yaml"),
                                 "strategy": "optuna", "optuna": {"trials": 2, "seed": 0, "params": {
                                     "train.learning_rate": {"low": 1.0e-5, "high": 1.0e-2, "log": True}}}}))
    asked = []

    def fake_run_trial(trial, spec, recipe_path, sdir):  # no training: the value is a function of lr
        asked.append(trial.varied["train.learning_rate"])
        return {"value": -abs(trial.varied["train.learning_rate"] - 1e-3)}

    monkeypatch.setattr(study_run, "run_trial", fake_run_trial)
    spec, recipe = load_study(f)
    study_run.run_optuna(spec, recipe, tmp_path)
    spec.optuna.trials = 4
    study_run.run_optuna(spec, recipe, tmp_path)
    assert len(asked) == 4 and len(set(asked)) == 4, asked


def test_a_wandb_study_sets_its_group_in_the_trainer_environment_only(tmp_path, monkeypatch):
    """WANDB_RUN_GROUP reaches the trainer; ftk's own environment is left as it was."""
    import os

    import ftk.eval.evaluate as evaluate
    import ftk.study.run as study_run
    import ftk.train.run as train_run
    import ftk.validate
    from ftk.recipe import load_recipe

    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump({"name": "grouped", "recipe": str(REPO / "configs" / "agnews_tiny_cpu.yaml"),
                                 "overrides": ["tracking.report_to=wandb"], "grid": {"train.seed": [1]}}))
    spec, recipe = load_study(f)
    seen = {}

    def fake_train(recipe, recipe_path, overrides, **kw):
        seen.update(kw.get("extra_env") or {})
        (tmp_path / "run").mkdir(exist_ok=True)
        return tmp_path / "run"

    monkeypatch.setattr(train_run, "train", fake_train)
    monkeypatch.setattr(evaluate, "evaluate_run", lambda *a, **k: ({"headline": "accuracy", "accuracy": 0.5},
                                                                  tmp_path / "run" / "eval-test"))
    monkeypatch.setattr(ftk.validate, "check_for_training", load_recipe)  # no data check: nothing trains
    (trial,) = study_run.plan_trials(spec, recipe, tmp_path / "s")
    study_run.run_trial(trial, spec, recipe, tmp_path / "s")
    assert seen == {"WANDB_RUN_GROUP": "grouped"}
    assert "WANDB_RUN_GROUP" not in os.environ


@pytest.mark.parametrize("study, expected", [
    ({"grid": {"train.learning_rate": [1.0e-3, 5.0e-4]},
      "paired": [{"train.learning_rate": [1.0e-3], "train.num_train_epochs": [1]}]},
     "paired.0.train.learning_rate: train.learning_rate is already varied in grid"),
    ({"strategy": "optuna", "optuna": {"trials": 2, "params": {
        "train.learning_rate": {"low": 1.0e-5, "high": 1.0e-3, "log": True, "step": 1.0e-5}}}},
     "`optuna.params.train.learning_rate`: give log or step, not both"),
    ({"strategy": "optuna", "optuna": {"trials": 2, "params": {"method.finetuning_type": {"choices": ["lora", "bogus"]}}}},
     "method.finetuning_type=bogus"),  # every choice is checked, not only the first
    ({"strategy": "optuna", "optuna": {"trials": 2, "params": {"train.num_train_epochs": {"low": 1, "high": -3}}}},
     "give low < high"),
], ids=["key-in-grid-and-paired", "optuna-log-and-step", "optuna-second-choice", "optuna-range"])
def test_bad_study_axes_are_one_line_and_write_nothing(tmp_path, study, expected):
    from conftest import ftk_here

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "recipe": str(REPO / "configs" / "agnews_llama31_full.yaml"),
                                    **study}))
    proc = ftk_here("study", "run", path, "--out", tmp_path / "out")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_large_study_needs_yes_and_a_broken_recipe_leaves_no_study_folder(tmp_path):
    from conftest import ftk_here

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "big", "recipe": str(REPO / "configs" / "agnews_tiny_cpu.yaml"),
                                    "grid": {"train.seed": list(range(16)), "train.learning_rate": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]}}))
    proc = ftk_here("study", "run", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2 and "80 trials" in proc.stderr and "--yes" in proc.stderr
    assert not (tmp_path / "out").exists()
    # with --yes it goes on, and the recipe's data files (relative to the repo, not here) are missing:
    # refused before the study folder (and its study.yaml) is written
    proc = ftk_here("study", "run", path, "--out", tmp_path / "out", "--yes", cwd=tmp_path)
    assert proc.returncode == 2 and "data file not found" in proc.stderr
    assert not (tmp_path / "out").exists()


REAL = sorted((REPO / "studies" / "real").glob("*.yaml"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_every_real_classification_study_has_the_strong_bases_and_baselines(path):
    """Zero-shot generate, zero-shot choice, K-shot choice, CV-chosen TF-IDF and majority rows (issue 31):
    a tuned row is only ever tested against the strongest of them. NER studies: the all-O row."""
    from ftk.data.task import load_task
    from ftk.recipe import load_recipe

    spec, recipe_path = load_study(path)
    r = load_recipe(recipe_path, spec.overrides)
    task = load_task(r.stage_recipes()[-1][1].task)
    trials = plan_trials(spec, recipe_path, Path("/nonexistent"))
    kinds = {(t.mode or ("head" if r.method.head != "none" else "generate"), bool(t.shots)) for t in trials if t.base}
    baselines = {t.baseline for t in trials if t.baseline}
    if task.is_classification:
        assert {("generate", False), ("choice", False), ("choice", True)} <= kinds
        assert baselines == {"tfidf", "majority"}
    else:
        assert "majority" in baselines
