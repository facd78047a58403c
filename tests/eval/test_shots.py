"""In-context (K-shot) base prompts: examples drawn from the train split with the recipe's seed,
balanced across labels, the same before every item, rendered as earlier chat turns and cut to fit
cutoff_len the way training cuts."""

import pytest

from conftest import REPO, ftk_here
from ftk.data.task import load_task
from ftk.errors import FtkError
from ftk.eval.shots import draw_shots
from ftk.train.prompts import Prompter, load_template


def _train(n_per_label=(30, 5, 12, 1)):
    task = load_task("agnews")
    rows = []
    for lab, n in zip(task.labels, n_per_label):
        rows += [{"id": f"{lab}-{i}", "label": lab, "instruction": f"news about {lab} {i}", "input": "",
                  "output": task.target_for(lab)} for i in range(n)]
    return task, rows


def test_shots_are_seeded_balanced_and_interleaved():
    task, rows = _train()
    shots = draw_shots(rows, task, 8, seed=42)
    assert shots == draw_shots(rows, task, 8, seed=42) and shots != draw_shots(rows, task, 8, seed=7)
    labels = [s["label"] for s in shots]
    # 8 over 4 labels: two of each, except Sci/Tech (one row): the others fill its place, round robin
    assert labels.count("Sci/Tech") == 1 and {labels.count(lab) for lab in ("World", "Business")} <= {2, 3}
    assert len(set(labels[:4])) == 4  # a round over the labels first, not one label's block and len({s["id"] for s in shots}) == 8


@pytest.mark.parametrize("k, says", [(0, "expected 1..64"), (65, "expected 1..64"), (49, "has 48 row")])
def test_impossible_shot_counts_are_one_line(k, says):
    task, rows = _train((12, 12, 12, 12))
    with pytest.raises(FtkError, match=says):
        draw_shots(rows, task, k, seed=1)


def test_shots_render_as_earlier_turns_and_are_fitted_first(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tmpl = load_template(tok, "llama3")
    task, rows = _train((3, 3, 3, 3))
    shots = draw_shots(rows, task, 4, seed=0)
    item = {"id": "x", "instruction": "classify this", "input": "markets rally " * 200, "output": ""}
    plain = Prompter(tok, tmpl, None)
    with_shots = Prompter(tok, tmpl, None, shots=shots)
    text = tok.decode(with_shots.encode(item)[0])
    for s in shots:  # every example: its prompt as a user turn, its answer as the assistant's
        assert s["instruction"] in text and s["output"] in text
    assert text.index(shots[-1]["output"]) < text.index("classify this")
    assert len(with_shots.encode(item)[0]) > len(plain.encode(item)[0])
    # cutoff 160: the examples first keep their answers; the item's text is cut to what is left
    fitted = Prompter(tok, tmpl, 160, shots=shots)
    ids, cut = fitted.prompt_ids(item, 8)
    assert cut and len(ids) + 8 <= 160
    assert all(s["output"] in tok.decode(ids) for s in shots) and "classify this" in tok.decode(ids)


def test_shots_need_a_base_model_and_a_generative_one(demo_run, tmp_path):
    _, run_dir, _ = demo_run
    proc = ftk_here("eval", run_dir, "--shots", "2", "--out", tmp_path / "e")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "use it with --base" in proc.stderr
    assert not (tmp_path / "e").exists()
    proc = ftk_here("eval", REPO / "configs" / "disaster_llama3_clshead_lora_tiny.yaml", "--base", "--shots", "2",
                    f"runs_dir={tmp_path}", f"data.prepared_dir={tmp_path / 'p'}",
                    f"model.name_or_path={tmp_path / 'm'}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "needs a generative model" in proc.stderr
