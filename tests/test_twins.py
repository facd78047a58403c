"""Every shipped CPU twin (configs/*_tiny.yaml) runs here end to end on the real files in
../shared/realdata: prepare, every stage of train, eval, scoring.

A smoke run (2 steps, 8 test rows, the model shared with the other tests of the same twin): it proves
each recipe's plumbing (task, template, method, stage chain, extraction, metrics), not that the method
learns. The learning runs, each against its trivial baseline, are in test_methods_e2e.py (sequence
head vs the majority class, token head vs all-O), test_e2e.py (generative SFT vs chance) and
test_real_model.py (prompt tuning on SmolLM2 vs a constant answer: a random-init tiny model gives
virtual tokens nothing to steer).
"""

import json

import pytest

from conftest import REALDATA, REPO, ftk_here, twin_overrides

pytestmark = pytest.mark.slow
ALL_TWINS = sorted((REPO / "configs").glob("*_tiny.yaml"))
# Twins whose whole recipe a learning test already runs end to end (prepare, train, eval, scoring):
# no second, smoke-sized run of their own.
RUN_BY = {
    "bionlp_gptneo_tokencls_lora_tiny": "test_token_classification_twin_beats_all_O_and_reports_seqeval",
    "disaster_llama3_clshead_lora_tiny": "test_s2_twin_beats_the_majority_class",
    "fpb_gptneo_prompt_tuning_tiny": "test_prompt_tuning_twin_learns_and_evaluates_in_both_modes",
    "mrpc_gptneo_prompt_tuning_tiny": "test_prompt_tuning_twin_learns_and_evaluates_in_both_modes",
}
TWINS = [p for p in ALL_TWINS if p.stem not in RUN_BY]


def test_every_twin_runs_in_some_test():
    """A twin left out of the smoke runs below is named in test_methods_e2e.py, by the test RUN_BY says."""
    source = (REPO / "tests" / "test_methods_e2e.py").read_text()
    for stem, test in RUN_BY.items():
        assert (REPO / "configs" / f"{stem}.yaml").is_file() and stem in source and f"def {test}(" in source
    assert len(TWINS) + len(RUN_BY) == len(ALL_TWINS)


@pytest.mark.parametrize("recipe", TWINS, ids=lambda p: p.stem)
def test_twin_runs(tmp_path, twin_models, recipe):
    if not REALDATA.exists():
        pytest.skip("twins read ../shared/realdata")
    proc = ftk_here("train", recipe, *twin_overrides(recipe, tmp_path, twin_models, "train.max_steps=2", "eval.limit=8"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "finished" and m["stages"] and all(s["status"] == "finished" for s in m["stages"])
    proc = ftk_here("eval", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir / "eval-test"
    metrics = json.loads((out / "metrics.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    scores = [json.loads(line) for line in (out / "scores.jsonl").open()]
    assert metrics["n"] == len(preds) == len(scores) == 8 and len({p["id"] for p in preds}) == 8
    # Every row is scored, an unparseable output as wrong: nothing dropped, nothing counted twice.
    assert metrics["invalid"] == sum(s["invalid"] for s in scores)
    assert not any(s["invalid"] and s["correct"] for s in scores)
    if metrics["headline"] == "accuracy":
        assert metrics["accuracy"] == sum(s["correct"] for s in scores) / 8
