"""Predictions in an evaluation folder are reused only by the evaluation that made them (issue 32):
another model's answers, a checkpoint's, another mode's or a predictions file's were taken as this
evaluation's own, with one `reusing 16 of 16` line as the only trace. Now the folder's identity.json
(weights' sha256, checkpoint, mode, engine, prompt settings, data split's sha256) must match, else one
line naming what differs, exit 2, nothing changed; `--fresh` starts the folder anew (ftk's own files
only); metrics.json says how many rows were reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ftk_here

pytestmark = pytest.mark.slow


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _refused(proc, out: Path, *says: str) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0], proc.stderr
    for text in says:
        assert text in lines[0], (text, lines[0])


def test_predictions_are_reused_only_by_the_evaluation_that_made_them(tmp_path, demo_run):
    demo_tmp, run_dir, _ = demo_run
    out = tmp_path / "ev"
    first = ftk_here("eval", run_dir, "--out", out, "--limit", "16")
    assert first.returncode == 0, first.stderr[-3000:]
    assert _metrics(out)["reused_rows"] == 0
    made = (out / "predictions.jsonl").read_bytes()

    again = ftk_here("eval", run_dir, "--out", out, "--limit", "16")  # the same evaluation: resumed, said
    assert again.returncode == 0 and "reusing 16 of 16" in again.stdout, again.stderr[-2000:]
    assert _metrics(out)["reused_rows"] == 16

    _refused(ftk_here("eval", run_dir, "--out", out, "--limit", "16", "--mode", "choice"), out,
             "holds 16 predictions", "mode: generate -> choice", "--fresh")
    base = [demo_tmp / "recipe.yaml", "--base", f"runs_dir={tmp_path / 'runs'}", "--out", out, "--limit", "16"]
    other = ftk_here("eval", *base)  # another model (the untrained base of the same recipe)
    _refused(other, out, "model: ")
    assert (out / "predictions.jsonl").read_bytes() == made, "a refused evaluation changed the predictions"

    (out / "notes.txt").write_text("mine\n")
    fresh = ftk_here("eval", *base, "--fresh")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "--fresh: removed" in fresh.stdout and (out / "notes.txt").read_text() == "mine\n"
    assert _metrics(out)["reused_rows"] == 0
    assert json.loads((out / "identity.json").read_text())["made_by"].startswith("e2e-base")


def test_a_folder_without_identity_or_scored_from_a_file_is_not_taken_as_a_models(tmp_path, demo_run):
    _, run_dir, _ = demo_run
    out = tmp_path / "ev"
    assert ftk_here("eval", run_dir, "--out", out, "--limit", "8").returncode == 0
    (out / "identity.json").unlink()  # an older ftk's folder, or predictions written by hand
    _refused(ftk_here("eval", run_dir, "--out", out, "--limit", "8"), out, "with no record of the model")

    scored = tmp_path / "scored"
    proc = ftk_here("eval", "--predictions", out / "predictions.jsonl", "--task", "agnews", "--out", scored)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _refused(ftk_here("eval", run_dir, "--out", scored, "--limit", "8"), scored, "made by --predictions")


def test_a_hidden_worker_option_with_a_bad_value_is_one_line(demo_run):
    _, run_dir, _ = demo_run
    for bad in ("3/2", "x/2", "1"):
        proc = ftk_here("eval", run_dir, "--shard", bad)
        assert proc.returncode == 2 and "--shard" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
