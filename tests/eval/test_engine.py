"""The inference engine: prefix reuse is exact, choice scores are true log-likelihoods, and
greedy output equals Hugging Face generate."""

import pytest
import torch

from ftk.data.prepare import prepare
from ftk.data.records import read_records
from ftk.data.task import load_task
from ftk.eval import generate as G
from ftk.train.prompts import Prompter


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synth_dir, tiny_model):
    out = tmp_path_factory.mktemp("engine")
    prepare(load_task("agnews"), {"test": str(synth_dir / "test.csv")}, out)
    recs = read_records(out / "agnews_test.jsonl")[:40]
    loaded = G.load(str(tiny_model), "llama3")
    prompter = Prompter(loaded.tokenizer, loaded.template, None)
    prompts = [prompter.encode(r)[0] for r in recs]
    return loaded, prompts


def test_common_prefix_len():
    assert G.common_prefix_len([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert G.common_prefix_len([[1, 2], [1, 2]]) == 1  # every prompt keeps one token of its own
    assert G.common_prefix_len([[7], [1, 2]]) == 0


def test_prefix_reuse_prefill_equals_full_prefill(setup):
    loaded, prompts = setup
    with_prefix = G.Engine(loaded, prompts, reuse_prefix=True)
    without = G.Engine(loaded, prompts, reuse_prefix=False)
    assert with_prefix.prefix_len > 20 and without.prefix_len == 0
    idx = list(range(16))
    with torch.inference_mode():
        a, *_ = with_prefix.prefill(idx)
        b, *_ = without.prefill(idx)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_greedy_equals_huggingface_generate(setup):
    loaded, prompts = setup
    ours = {}
    for idx, texts in G.Engine(loaded, prompts).generate(batch_size=16, max_new_tokens=6):
        ours.update(zip(idx, texts))
    tok = loaded.tokenizer
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            out = loaded.model.generate(input_ids=torch.tensor([p]), do_sample=False, max_new_tokens=6,
                                        eos_token_id=loaded.stop_ids, pad_token_id=tok.pad_token_id)
            assert ours[i] == tok.decode(out[0, len(p):], skip_special_tokens=True), i


def test_choice_scores_are_sequence_log_likelihoods(setup):
    loaded, prompts = setup
    task = load_task("agnews")
    eot = loaded.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    labels = [loaded.tokenizer.encode(task.target_for(l), add_special_tokens=False) + [eot] for l in task.labels]
    assert len({len(l) for l in labels}) > 1  # labels of different lengths are packed correctly
    got = {}
    for idx, scores in G.Engine(loaded, prompts).choice(labels, batch_size=8):
        for j, i in enumerate(idx):
            got[i] = scores[j]
    with torch.inference_mode():
        for i in range(0, len(prompts), 7):
            for k, lab in enumerate(labels):
                ids = torch.tensor([prompts[i] + lab])
                logp = torch.log_softmax(loaded.model(input_ids=ids).logits[0].float(), -1)
                n = len(prompts[i])
                ref = sum(logp[n - 1 + j, t].item() for j, t in enumerate(lab))
                assert got[i][k].item() == pytest.approx(ref, abs=1e-3), (i, k)


def test_label_drafts_give_exactly_plain_greedy_output(setup):
    """Drafting from the label set must not change a single generated token. The untrained model
    mostly leaves the label set, so this also exercises the fall-back to plain decoding."""
    loaded, prompts = setup
    task = load_task("agnews")
    eot = loaded.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    labels = [loaded.tokenizer.encode(task.target_for(l), add_special_tokens=False) + [eot] for l in task.labels]
    eng = G.Engine(loaded, prompts)
    plain, drafted = {}, {}
    for idx, texts in eng.generate(batch_size=16, max_new_tokens=8):
        plain.update(zip(idx, texts))
    for idx, texts in eng.generate(batch_size=16, max_new_tokens=8, label_ids=labels):
        drafted.update(zip(idx, texts))
    assert drafted == plain
    assert eng.fallback_rows > 0


def test_label_end_token_only_when_a_label_prefixes_another():
    from types import SimpleNamespace

    from ftk.data.task import TaskSpec
    from ftk.eval.predict import label_token_ids

    vocab = {"yes": [5], "yes please": [5, 6], "no": [7]}
    tok = SimpleNamespace(encode=lambda text, add_special_tokens=False: list(vocab[text]), eos_token_id=99)
    loaded = SimpleNamespace(tokenizer=tok, stop_ids=[99])

    def task(labels):
        return TaskSpec.model_validate({"name": "t", "kind": "classification", "labels": labels,
                                        "sources": {"csv": {"reader": "csv", "label_column": "l"}},
                                        "prompts": {"default": "p", "versions": {"p": "?"}}})

    assert label_token_ids(task(["yes", "no"]), loaded) == [[5], [7]]
    assert label_token_ids(task(["yes", "yes please", "no"]), loaded) == [[5, 99], [5, 6, 99], [7, 99]]
    assert label_token_ids(task(["yes", "no"]), loaded, end=True) == [[5, 99], [7, 99]]
