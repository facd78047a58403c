"""ftk's own trainer (classification heads, prompt tuning): the loss, what trains and what must not
change, the word alignment, and the eval engine with prompt tuning's virtual tokens."""

import numpy as np
import pytest
import torch

from conftest import realdata
from ftk.train.hf.models import WeightedLossTrainer, balanced_class_weights, build_model, load_tokenizer, weighted_cross_entropy
from ftk.train.hf.tokens import IGNORE, align, tag_set, word_tags

LORA = {"kind": "sequence_classification", "finetuning_type": "lora", "lora_rank": 4, "lora_alpha": 8,
        "lora_dropout": 0.0, "lora_target": "q_proj,v_proj", "lora_bias": "none"}


def test_balanced_weights_are_scikit_learns_and_the_loss_is_weighted_cross_entropy():
    from sklearn.utils.class_weight import compute_class_weight

    counts = [3444, 2557]
    y = np.array([0] * counts[0] + [1] * counts[1])
    assert balanced_class_weights(counts) == pytest.approx(compute_class_weight("balanced", classes=np.array([0, 1]), y=y))
    logits = torch.randn(8, 2)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    w = torch.tensor(balanced_class_weights(counts))
    assert torch.equal(weighted_cross_entropy(logits, labels, w), torch.nn.functional.cross_entropy(logits, labels, weight=w))


@pytest.mark.parametrize("kind, weights", [("sequence_classification", [0.7, 2.0]),
                                           ("sequence_classification", None),
                                           ("token_classification", [1.0, 3.0, 0.5])])
def test_gradient_accumulation_4x4_makes_the_update_of_one_batch_of_16(tiny_model, kind, weights):
    """The head's loss is averaged over the whole optimizer step: it used to be each micro-batch's mean,
    not divided by the accumulation steps, so 4 x 4 stepped 4 times as far as 1 x 16."""
    import tempfile

    from transformers import TrainingArguments

    from ftk.train.hf.data import collator

    tok = load_tokenizer(str(tiny_model))
    labels = ["a", "b", "c"] if kind == "token_classification" else ["no", "yes"]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        enc = tok(" ".join(rng.choice(["storm", "sun", "fire", "beach", "flood", "calm"], size=2 + i % 5)))
        if kind == "token_classification":
            y = [int(rng.integers(0, 3)) if j % 3 else IGNORE for j in range(len(enc["input_ids"]))]
        else:
            y = int(rng.integers(0, 2))
        rows.append({**enc, "labels": y})
    after = []
    for batch, accumulation in ((16, 1), (4, 4)):
        torch.manual_seed(0)
        model = build_model(dict(LORA, finetuning_type="full", kind=kind), str(tiny_model), tok, labels)
        for m in model.modules():  # the token head's dropout would draw differently per micro-batch
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        args = TrainingArguments(tempfile.mkdtemp(), max_steps=1, learning_rate=0.5, optim="sgd",
                                 per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                                 report_to="none", save_strategy="no", disable_tqdm=True, warmup_steps=0,
                                 lr_scheduler_type="constant", max_grad_norm=0.0)
        WeightedLossTrainer(model=model, args=args, train_dataset=rows, data_collator=collator(kind, tok),
                            class_weights=weights).train()
        after.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert any(not torch.equal(before[n], after[0][n]) for n in before)  # the step did move the weights
    for n in after[0]:
        assert torch.allclose(after[0][n], after[1][n], atol=1e-6), (n, (after[0][n] - after[1][n]).abs().max())


def test_saved_tokenizers_hold_no_truncation_and_an_exported_head_appends_eos(tiny_model, tmp_path):
    """tokenizer.json kept `truncation: {max_length: ...}` from encoding; an exported sequence head's
    tokenizer did not append EOS, so plain transformers fed the head other ids than ftk trained on."""
    import json

    from transformers import AutoTokenizer

    from ftk.train.hf.data import seq_cls_ids
    from ftk.train.hf.models import saveable

    tok = load_tokenizer(str(tiny_model))
    texts = ["forest fire near the town", "lovely sunny afternoon", "x"]
    want = [seq_cls_ids(tok, {"input": t}, 10_000) for t in texts]  # what ftk trains and evaluates on
    saveable(tok).save_pretrained(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "tokenizer.json").read_text())["truncation"] is None
    plain = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert [plain(t)["input_ids"] for t in texts] != want  # a run's tokenizer stays as loaded
    saveable(load_tokenizer(str(tiny_model)), append_eos=True).save_pretrained(tmp_path / "export")
    exported = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert [exported(t)["input_ids"] for t in texts] == want
    assert [seq_cls_ids(exported, {"input": t}, 10_000) for t in texts] == want  # no second EOS in ftk


def test_a_head_marks_truncated_only_the_rows_it_cut(tiny_model, tmp_path):
    """A row exactly as long as cutoff_len was marked `truncated` though nothing of it was cut."""
    import json

    from ftk.data.task import load_task
    from ftk.eval.heads import predict_heads
    from ftk.train.hf.data import seq_cls_ids

    tok = load_tokenizer(str(tiny_model))
    model = build_model(dict(LORA, finetuning_type="full"), str(tiny_model), tok, ["no", "yes"])
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "ftk_method.json").write_text(json.dumps(
        {"kind": "sequence_classification", "finetuning_type": "full", "labels": ["no", "yes"], "append_eos": True}))
    records = [{"id": "fits", "input": "storm floods the valley", "label": "yes"},
               {"id": "cut", "input": "storm floods the valley and the fire spreads downtown tonight", "label": "yes"}]
    cutoff = len(seq_cls_ids(tok, records[0], 1 << 30))
    preds = predict_heads(records, tmp_path / "ev", model_dir=tmp_path / "m", base_model=str(tiny_model),
                          task=load_task("disaster_tweets"), cutoff_len=cutoff)
    assert "truncated" not in preds["fits"] and preds["cut"]["truncated"] is True


def test_a_full_fine_tuned_heads_checkpoint_is_not_called_untrained(tiny_model, tmp_path, capsys):
    """A checkpoint folder has no ftk_method.json of its own (it comes from the final model): its eval
    said "the base model has no trained head"."""
    import json

    from ftk.data.task import load_task
    from ftk.eval.heads import predict_heads

    tok = load_tokenizer(str(tiny_model))
    model = build_model(dict(LORA, finetuning_type="full"), str(tiny_model), tok, ["no", "yes"])
    model.save_pretrained(tmp_path / "model" / "checkpoint-5")
    (tmp_path / "model" / "ftk_method.json").write_text(json.dumps(
        {"kind": "sequence_classification", "finetuning_type": "full", "labels": ["no", "yes"], "append_eos": True}))
    tok.save_pretrained(tmp_path / "model")
    predict_heads([{"id": "a", "input": "storm", "label": "yes"}], tmp_path / "ev",
                  model_dir=tmp_path / "model" / "checkpoint-5", base_model=str(tiny_model),
                  task=load_task("disaster_tweets"), cutoff_len=64, info_dir=tmp_path / "model")
    assert "no trained head" not in capsys.readouterr().out


def _batch(tok, texts, labels):
    enc = tok(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(labels)}


def test_trainer_loss_equals_weighted_cross_entropy_of_the_model_logits(tiny_model, tmp_path):
    from transformers import TrainingArguments

    tok = load_tokenizer(str(tiny_model))
    model = build_model(dict(LORA, finetuning_type="full"), str(tiny_model), tok, ["no", "yes"])
    weights = balanced_class_weights([70, 30])
    trainer = WeightedLossTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to="none"),
                                  class_weights=weights)
    batch = _batch(tok, ["storm floods the valley", "nice day at the beach", "fire downtown"], [1, 0, 1])
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = torch.nn.functional.cross_entropy(logits, batch["labels"], weight=torch.tensor(weights))
    assert torch.allclose(loss, expected, atol=1e-6)


def _train_steps(model, tok, kind, n=3):
    """A few real optimizer steps through transformers' Trainer."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    from ftk.train.hf.data import collator

    if kind == "prompt_tuning":
        rows = [{"input_ids": tok.encode(t), "labels": tok.encode(t)} for t in ("market shares rose", "team wins cup")]
        for r in rows:
            r["attention_mask"] = [1] * len(r["input_ids"])
    else:
        rows = [{**{k: v for k, v in tok(t).items()}, "labels": y} for t, y in (("storm floods", 1), ("sunny day", 0))]
    args = TrainingArguments(tempfile.mkdtemp(), max_steps=n, learning_rate=0.05, per_device_train_batch_size=2,
                             report_to="none", save_strategy="no", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=rows * 2, data_collator=collator(kind, tok)).train()


def test_lora_seq_cls_trains_exactly_lora_and_head_and_the_base_stays_bit_identical(tiny_model):
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(tiny_model))
    model = build_model(LORA, str(tiny_model), tok, ["no", "yes"])
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n or ".score." in n for n in trainable)
    assert any(".score." in n for n in trainable)  # the head trains (and is saved with the adapter)
    cfg = model.config
    kv = cfg.num_key_value_heads * cfg.hidden_size // cfg.num_attention_heads
    lora = cfg.num_hidden_layers * 4 * ((cfg.hidden_size + cfg.hidden_size) + (cfg.hidden_size + kv))
    assert sum(trainable.values()) == lora + 2 * cfg.hidden_size  # LoRA q/v + a 2-way head, nothing else
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    heads_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _train_steps(model, tok, "sequence_classification")
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)  # every base weight bit-identical
    assert any(not torch.equal(heads_before[n], after[n]) for n in heads_before)  # ... and training did happen
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    emb = [p for n, p in model.named_parameters() if n.endswith("embed_tokens.weight")][0]
    assert torch.equal(emb, base.get_input_embeddings().weight)  # the saved base, untouched


def test_prompt_tuning_trains_exactly_virtual_tokens_times_hidden(tiny_model):
    from ftk.recipe import load_recipe
    from conftest import REPO

    tok = load_tokenizer(str(tiny_model))
    method = {"kind": "prompt_tuning", "finetuning_type": "prompt_tuning", "num_virtual_tokens": 6,
              "prompt_tuning_init": "random"}
    model = build_model(method, str(tiny_model), tok, [])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == 6 * model.config.hidden_size
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    _train_steps(model, tok, "prompt_tuning")
    assert all(torch.equal(frozen[n], p) for n, p in model.named_parameters() if n in frozen)
    # S3 reports 16,384 trainable parameters for GPT-Neo 1.3B (hidden size 2048): 8 virtual tokens.
    r = load_recipe(REPO / "configs" / "fpb_gptneo_prompt_tuning.yaml")
    assert r.method.num_virtual_tokens * 2048 == 16_384


def test_token_alignment_maps_every_jnlpba_test_sentence_back_to_its_tags(tiny_model):
    from ftk.data.sources import read_source
    from ftk.data.task import load_task

    task = load_task("bionlp2004")
    res = read_source(task, str(realdata("jnlpba", "Genia4EReval1.iob2")), "test")
    sentences = [(ex.meta["tokens"], ex.meta["tags"]) for ex in res.examples]
    assert len(sentences) == 3856
    tok = load_tokenizer(str(tiny_model))
    tags = tag_set(task.labels)
    index = {t: i for i, t in enumerate(tags)}
    exact = 0
    for words, gold in sentences:
        a = align(tok, words, [index[t] for t in gold])
        assert len(a.input_ids) == len(a.labels) and sum(lab != IGNORE for lab in a.labels) == len(words)
        exact += word_tags(a.labels, a.word_starts, tags) == gold
        # the sub-tokens of the words, in order, are the sentence
        assert tok.decode(a.input_ids, skip_special_tokens=True) == " ".join(words)
    assert exact == 3856


def test_truncated_words_read_as_O(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    a = align(tok, ["IL-2", "receptor", "expression"] * 20, [1, 2, 0] * 20, max_len=12)
    assert len(a.input_ids) == 12 and a.word_starts[-1] is None
    assert word_tags([1] * 12, a.word_starts, ["O", "B-protein"])[-1] == "O"


def test_engine_with_virtual_tokens_equals_peft_prompt_tuning(tiny_model, tmp_path):
    """The eval engine runs a prompt-tuned model as base model + virtual-token prefix: its logits and
    label scores equal PEFT's own forward pass."""
    from ftk.eval import generate as G

    tok = load_tokenizer(str(tiny_model))
    method = {"kind": "prompt_tuning", "finetuning_type": "prompt_tuning", "num_virtual_tokens": 5,
              "prompt_tuning_init": "random"}
    torch.manual_seed(0)
    peft_model = build_model(method, str(tiny_model), tok, []).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = G.load(str(tiny_model), "llama3", adapter=str(tmp_path / "adapter"))
    assert loaded.n_virtual == 5
    prompts = [tok.encode("Classify: market shares rose today"), tok.encode("Classify: the team won the cup final"),
               tok.encode("Classify: rain")]
    eng = G.Engine(loaded, prompts)
    assert eng.prefix_len >= 2 and eng.offset == eng.prefix_len + 5
    with torch.inference_mode():
        logits, *_ = eng.prefill(list(range(3)))
        for i, p in enumerate(prompts):
            ref = peft_model(input_ids=torch.tensor([p])).logits[0, -1].float()
            assert torch.allclose(logits[i], ref, atol=1e-4), (logits[i] - ref).abs().max()
        labels = [tok.encode(" World", add_special_tokens=False), tok.encode(" Sports team", add_special_tokens=False)]
        scores = eng._choice([0, 1, 2], labels)
        for i, p in enumerate(prompts):
            for k, lab in enumerate(labels):
                full = torch.tensor([p + lab])
                lp = torch.log_softmax(peft_model(input_ids=full).logits[0].float(), -1)  # virtual positions first
                ref = sum(lp[5 + len(p) - 1 + j, t] for j, t in enumerate(lab))
                assert abs(float(scores[i, k]) - float(ref)) < 1e-3
