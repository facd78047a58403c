"""`--slurm` on a real scheduler: a single-node SLURM on localhost (tests/slurm_local.py installs
Debian's slurm-wlm and munge when it may, starts munged/slurmctld/slurmd and stops what it started).
`ftk train --slurm` of a tiny recipe runs as a job, records its own state, and gives the same
weights as the same recipe trained locally; `ftk study run --slurm` of a 2-trial study runs as a job
array and `ftk study report` builds its table. Skipped with the reason where SLURM cannot be had
(not root, no SLURM and no apt-get); in CI (root, Debian) it runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import PORT_GROUP, REPO, run_ftk, tiny_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import slurm_local

    why = slurm_local.why_not()
    if why:
        pytest.skip(f"no local SLURM: {why}")
    try:
        slurm_local.install()
    except Exception as exc:  # no package registry reachable: SLURM cannot be had here
        pytest.skip(f"no local SLURM: {exc}")
    c = slurm_local.LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()  # installed, a failure to start is a failure, not a skip
        yield c
    finally:
        c.stop()


def _wait(check, what: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _recipe(tmp: Path, synth_dir: Path, tiny_model: Path) -> Path:
    return tiny_recipe(tmp, synth_dir, tiny_model, "train: {max_steps: 6, logging_steps: 2}\n"
                       "distributed: {slurm: {gpus_per_node: 0}}\n", name="slurm_tiny",
                       data_extra="max_samples: {train: 160, test: 16}")


def _finished(run_dir: Path):
    m = json.loads((run_dir / "manifest.json").read_text())
    return m if m["status"] in ("finished", "failed") else None


@pytest.mark.xdist_group(PORT_GROUP)
def test_train_job_and_study_array_on_a_real_scheduler(cluster, tmp_path, synth_dir, tiny_model):
    """Submitted together (the node runs two at a time): `ftk train --slurm` records its own state and
    gives the weights a local run of the same recipe gives (the study's lr-1e-3 trial, trained by
    `python -m llamafactory.launcher` inside its array task: srun torchrun == the local launcher), and
    the 2-trial array reports."""
    recipe = _recipe(tmp_path, synth_dir, tiny_model)
    proc = run_ftk("train", recipe, f"runs_dir={tmp_path / 'slurm-runs'}", "--slurm", cwd=tmp_path, env=cluster.env)
    assert proc.returncode == 0, proc.stderr
    assert "[ftk] submitted batch job " in proc.stdout
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "slurm_array", "recipe": str(recipe),
                                     "grid": {"train.learning_rate": [1.0e-3, 5.0e-4]}, "eval": {"limit": 16}}))
    sdir = tmp_path / "study-out"
    proc = run_ftk("study", "run", study, "--slurm", "--out", sdir, cwd=tmp_path, env=cluster.env)
    assert proc.returncode == 0, proc.stderr
    array = json.loads((sdir / "slurm-job.json").read_text())["slurm_job_id"]

    (run_dir,) = (tmp_path / "slurm-runs").iterdir()
    job = json.loads((run_dir / "manifest.json").read_text())["slurm_job_id"]
    m = _wait(lambda: _finished(run_dir), f"job {job}")
    log = "".join(p.read_text() for p in run_dir.glob("slurm-*.out"))
    assert m["status"] == "finished" and m["exit_code"] == 0, log[-3000:]
    assert m["slurm_job_id"] == job and m["job_started"] and "all_results.json" in m["stages"][0]["results"]
    listing = run_ftk("runs", tmp_path / "slurm-runs", env=cluster.env)
    assert listing.returncode == 0 and "finished" in listing.stdout, listing.stdout

    def done():
        states = list((sdir / "trials").glob("*.json")) if (sdir / "trials").is_dir() else []
        for out in sdir.glob("slurm-*.out"):
            text = out.read_text()
            assert "Traceback" not in text and "error:" not in text, text[-3000:]
        return len(states) == 2

    _wait(done, f"array job {array}")
    report = run_ftk("study", "report", sdir, cwd=REPO, env=cluster.env)
    assert report.returncode == 0, report.stderr
    rep = json.loads((sdir / "report.json").read_text())
    assert len(rep["rows"]) == 2 and all(r["n"] == 16 for r in rep["rows"])
    same = next(Path(r["run_dir"]) for r in rep["rows"] if r["varied"]["train.learning_rate"] == 1.0e-3)
    same = same if same.is_absolute() else sdir / same
    weights = sorted(p.name for p in (run_dir / "model").glob("*.safetensors"))
    assert weights
    for name in weights:
        assert (run_dir / "model" / name).read_bytes() == (same / "model" / name).read_bytes(), name
