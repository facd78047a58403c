"""`--slurm` as a scheduler sees it, with stand-in `sbatch`, `srun`, `scontrol` and `sacct` on PATH:
the #SBATCH header a CPU partition accepts, the job id recorded, a refused submission leaves nothing
behind, the job writes its own state into the manifest, `ftk runs` asks the scheduler, and a
study's array runs the study folder's copy."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, ftk_here, tiny_recipe
from ftk.errors import FtkError
from ftk.recipe import load_recipe
from ftk.train.plan import dry_run
from ftk.train.runs import read_manifest, status_of
from ftk.train.slurm import render_sbatch

S0 = REPO / "configs" / "agnews_llama31_full.yaml"


def _tool(bindir: Path, name: str, body: str) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def test_header_for_a_cpu_partition_and_a_small_node():
    r = load_recipe(S0, ["distributed.slurm.gpus_per_node=0"])
    text = render_sbatch(r, dry_run(r), Path("runs/x"))
    assert "--gpus-per-node" not in text and "--cpus-per-task" not in text  # the partition's defaults
    r = load_recipe(S0, ["distributed.slurm.cpus_per_task=4"])
    text = render_sbatch(r, dry_run(r), Path("runs/x"))
    assert "#SBATCH --gpus-per-node=8\n" in text and "#SBATCH --cpus-per-task=4\n" in text


@pytest.mark.parametrize("option", ["--export=ALL,BASH_ENV=/tmp/x", "--export-file=/tmp/env", "--get-user-env"])
def test_extra_sbatch_cannot_set_the_jobs_environment(tmp_path, option):
    bad = tmp_path / "r.yaml"
    bad.write_text(f"extends: {S0}\ndistributed: {{slurm: {{extra_sbatch: ['{option}']}}}}\n")
    with pytest.raises(FtkError) as exc:
        load_recipe(bad)
    assert "distributed.slurm.extra_sbatch" in str(exc.value) and "environment" in str(exc.value)
    assert load_recipe(S0, ["distributed.slurm.extra_sbatch=[--qos=high]"]).distributed.slurm.extra_sbatch == ["--qos=high"]


@pytest.fixture
def slurm_recipe(tmp_path, synth_dir, tiny_model):
    return tiny_recipe(tmp_path, synth_dir, tiny_model, "distributed: {slurm: {gpus_per_node: 0}}\n", name="sl")


def test_submitted_job_records_its_id_and_its_own_state(tmp_path, slurm_recipe, monkeypatch):
    bindir = tmp_path / "bin"
    _tool(bindir, "sbatch", 'echo "4242;cluster"')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    proc = ftk_here("train", slurm_recipe, "--slurm", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[ftk] submitted batch job 4242" in proc.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    m = read_manifest(run_dir)
    assert m["status"] == "submitted" and m["slurm_job_id"] == "4242" and m["submitted"]

    # the scheduler's word while the job waits or after it died without its EXIT trap
    _tool(bindir, "sacct", 'echo "PENDING"')
    assert status_of(m) == "pending"
    _tool(bindir, "sacct", 'echo "TIMEOUT"')
    assert status_of(m) == "failed (TIMEOUT)"
    _tool(bindir, "sacct", "exit 1")  # no accounting: squeue, then the record
    _tool(bindir, "squeue", 'echo "RUNNING"')
    assert status_of(m) == "running"
    (bindir / "sacct").unlink()
    (bindir / "squeue").unlink()

    # the job itself: srun stands in for the trainer (exit code FAKE_RC); the EXIT trap records the end
    _tool(bindir, "scontrol", "echo localhost")
    _tool(bindir, "srun", 'echo "srun $*" >> "$FAKE_LOG"; exit "${FAKE_RC:-0}"')
    script = run_dir / "sbatch.sh"
    env = dict(os.environ, SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="localhost", FAKE_LOG=str(tmp_path / "srun.log"))
    done = subprocess.run(["bash", str(script)], env=dict(env, FAKE_RC="3"), capture_output=True, text=True)
    assert done.returncode == 3
    m = read_manifest(run_dir)
    assert m["status"] == "failed" and m["exit_code"] == 3 and m["slurm_job_id"] == "4242" and m["ended"]
    assert "llamafactory.launcher" in (tmp_path / "srun.log").read_text()
    (run_dir / "model").mkdir()
    (run_dir / "model" / "all_results.json").write_text(json.dumps({"train_loss": 0.5}))
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    m = read_manifest(run_dir)
    assert m["status"] == "finished" and m["exit_code"] == 0 and m["job_started"] and m["train_seconds"] >= 0
    assert m["stages"][0]["status"] == "finished" and "all_results.json" in m["stages"][0]["results"]
    assert status_of(m) == "finished"


def test_refused_submission_leaves_no_run_folder(tmp_path, slurm_recipe, monkeypatch):
    bindir = tmp_path / "bin"
    _tool(bindir, "sbatch", 'echo "sbatch: error: Invalid generic resource (gres) specification" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    proc = ftk_here("train", slurm_recipe, "--slurm", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sbatch failed: sbatch: error: Invalid generic resource" in lines[0]
    assert list((tmp_path / "runs").iterdir()) == []


def test_study_array_runs_the_study_folders_copy_from_anywhere(tmp_path, monkeypatch):
    from ftk.study.run import plan_trials, run_study
    from ftk.study.spec import load_study

    monkeypatch.setenv("PATH", str(Path(os.__file__).parent))  # no sbatch: the script is written only
    monkeypatch.chdir(REPO)
    study = REPO / "studies" / "s0_agnews_lr_tiny.yaml"
    sdir = run_study(study, out=tmp_path / "study", slurm=True)
    script = (sdir / "study.sbatch").read_text()
    assert f"ftk study run {sdir / 'study.yaml'} --out {sdir}" in script
    copy = sdir / "study.yaml"
    monkeypatch.chdir(tmp_path)  # another working directory: the copy names its recipe absolutely
    spec, recipe = load_study(copy)
    spec0, recipe0 = load_study(study)
    assert recipe.is_absolute() and recipe == recipe0.resolve()
    assert [t.id for t in plan_trials(spec, recipe, sdir)] == [t.id for t in plan_trials(spec0, recipe0, sdir)]
    before = copy.read_bytes()
    run_study(copy, out=sdir, slurm=True)  # an array task, or a rerun, from the copy: the copy is unchanged
    assert copy.read_bytes() == before


def test_a_dollar_in_a_recipe_path_stays_literal_in_the_batch_script(tmp_path):
    """ftk's own job variables ($MASTER_ADDR, $SLURM_JOB_ID, $SLURM_ARRAY_TASK_ID) expand when the job
    runs; a `$` in a path from a recipe does not (it used to be double-quoted, hence expanded)."""
    import shlex

    r = load_recipe(S0)
    run = Path("/scratch/$USER/runs/x")
    from ftk.train.plan import Topology, plan

    text = render_sbatch(r, plan(r, run, Topology()), run)
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert '"$MASTER_ADDR:29500"' in srun and '"$SLURM_JOB_ID"' in srun
    result = subprocess.run(["bash", "-c", f"USER=someone; printf '%s\\n' {srun.removeprefix('srun ')}"],
                            capture_output=True, text=True, env={"MASTER_ADDR": "node1", "SLURM_JOB_ID": "7"})
    words = result.stdout.splitlines()
    assert "node1:29500" in words and "7" in words
    assert all("someone" not in w for w in words)  # $USER was not expanded
    assert "ftk_job_ended() { python -m ftk.train.jobstate ended '/scratch/$USER/runs/x'" in text
    assert shlex.split(text.split("jobstate started ", 1)[1].splitlines()[0])[0] == "/scratch/$USER/runs/x"


def test_a_value_sbatch_cannot_hold_names_its_key_without_a_file():
    """The backstop behind validation: the error leads with the key even though no file is known here."""
    from ftk.train.slurm import safe

    with pytest.raises(FtkError) as exc:
        safe("gpu\nrm -rf ~", "distributed.slurm.partition")
    assert str(exc.value) == ("distributed.slurm.partition: 'gpu\\nrm -rf ~' holds a newline or control character, "
                              "which cannot go into sbatch.sh")
    assert str(FtkError("bad row", where="12")) == "line 12: bad row"
