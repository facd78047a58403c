"""ftk eval on over-long prompts: truncations are counted in metrics.json and on the terminal, and
choice mode keeps each label's raw log-likelihood besides the rounded probabilities."""

import json
import math

from conftest import REPO
from ftk.data.prepare import prepare_recipe
from ftk.eval.evaluate import evaluate_run
from ftk.eval.report import print_table
from ftk.recipe import load_recipe


def _fake_run(tmp_path, synth_dir, tiny_model, cutoff):
    """A run directory whose "trained" model is the untrained tiny model (eval mechanics only)."""
    recipe = load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml", [
        f"data.train={synth_dir / 'train.csv'}", f"data.test={synth_dir / 'test.csv'}",
        f"data.prepared_dir={tmp_path / 'prepared'}", f"model.name_or_path={tiny_model}",
        "data.max_samples={test: 24}", f"train.cutoff_len={cutoff}", "eval.batch_size=8"])
    prepare_recipe(recipe)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"recipe": recipe.model_dump(mode="json"),
                                                   "model_dir": str(tiny_model), "status": "finished"}))
    return run


def test_truncated_prompts_are_counted_and_choice_keeps_raw_logliks(tmp_path, synth_dir, tiny_model, capsys):
    run = _fake_run(tmp_path, synth_dir, tiny_model, cutoff=140)  # instruction + framing ~125 tokens
    metrics, out = evaluate_run(run, mode="choice")
    assert metrics["n"] == 24 and metrics["cutoff_len"] == 140
    assert metrics["truncated_prompts"] == 24
    print_table(metrics)
    assert "truncated prompts: 24 of 24" in capsys.readouterr().out
    assert "truncated prompts: 24 of 24" in (out / "report.md").read_text()
    rows = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    for row in rows:
        ll = row["label_loglik"]
        assert set(ll) == {"World", "Sports", "Business", "Sci/Tech"} and row["truncated"] is True
        z = max(ll.values())
        norm = sum(math.exp(v - z) for v in ll.values())
        for lab, v in ll.items():  # the rounded probabilities are the softmax of the raw scores
            assert abs(math.exp(v - z) / norm - row["label_probs"][lab]) < 1e-6
        assert row["predict"].endswith(max(ll, key=ll.get))
    assert any(len(repr(v)) > 10 for row in rows for v in row["label_loglik"].values())  # not rounded


def test_short_prompts_are_not_flagged(tmp_path, synth_dir, tiny_model):
    run = _fake_run(tmp_path, synth_dir, tiny_model, cutoff=1024)
    metrics, out = evaluate_run(run)
    assert metrics["truncated_prompts"] == 0
    assert not any("truncated" in json.loads(line) for line in (out / "predictions.jsonl").open())
