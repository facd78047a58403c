"""Prepared splits load through LLaMA-Factory's own loader, and ftk's prompts equal its tokens."""

import pytest

from ftk.data.prepare import prepare
from ftk.data.records import read_records
from ftk.data.task import load_task
from ftk.train.prompts import Prompter, load_template


def _lf_dataset(tmp_path, tiny_model, prepared, **extra):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = dict(model_name_or_path=str(tiny_model), stage="sft", finetuning_type="full",
                dataset_dir=str(prepared), template="llama3", cutoff_len=1024,
                output_dir=str(tmp_path / "lf_out"), overwrite_cache=True, report_to="none",
                preprocessing_num_workers=None, **extra)
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    return get_dataset(template, model_args, data_args, training_args, stage="sft", **tm), tm["tokenizer"]


def test_splits_load_in_llamafactory_and_prompts_match_token_for_token(tmp_path, synth_dir, tiny_model):
    prepared = tmp_path / "prepared"
    task = load_task("agnews")
    prepare(task, {"train": str(synth_dir / "train.csv"), "test": str(synth_dir / "test.csv")}, prepared,
            max_samples={"train": 64})

    dm, _ = _lf_dataset(tmp_path, tiny_model, prepared, do_train=True, dataset="agnews_train")
    train = dm["train_dataset"]
    assert len(train) == 64
    assert any(x != -100 for x in train[0]["labels"])  # the response is supervised

    dm, tok = _lf_dataset(tmp_path, tiny_model, prepared, do_predict=True, predict_with_generate=True,
                          eval_dataset="agnews_test")
    lf_eval = dm["eval_dataset"]
    records = read_records(prepared / "agnews_test.jsonl")
    assert len(lf_eval) == len(records) == 200
    prompter = Prompter(tok, load_template(tok, "llama3"), 1024)
    for rec, lf_row in zip(records, lf_eval):
        assert prompter.encode(rec)[0] == lf_row["input_ids"], rec["id"]
    # The prompt really holds the chat scaffolding and the text.
    text = tok.decode(lf_eval[0]["input_ids"])
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


REAL_SOURCES = {
    "agnews": ("ag_news/test.csv", None),
    "yelp_review_full": ("yelp_review_full/hf_train_sample1000_test.csv", "hf_csv"),
    "disaster_tweets": ("disaster_tweets/train.csv", None),
    "financial_phrasebank": ("financial_phrasebank/Sentences_AllAgree.txt", None),
    "mrpc": ("mrpc/msr_paraphrase_test.txt", None),
    "bionlp2004": ("jnlpba/sampletest1.iob2", None),
    "shopbench": ("shopbench/development.json", None),
}


@pytest.mark.parametrize("task_name", sorted(REAL_SOURCES))
def test_every_task_loads_through_llamafactory(tmp_path, tiny_model, task_name):
    from conftest import realdata

    rel, fmt = REAL_SOURCES[task_name]
    src = realdata(*rel.split("/"))
    prepared = tmp_path / "prepared"
    m = prepare(load_task(task_name), {"train": str(src)}, prepared, source_format=fmt,
                max_samples={"train": 40}, val_size=8)
    for split in ("train", "validation"):
        ds = m["splits"][split]["dataset"]
        dm, tok = _lf_dataset(tmp_path / split, tiny_model, prepared, do_train=True, dataset=ds)
        data = dm["train_dataset"]
        assert len(data) == m["splits"][split]["rows"]
        text = tok.decode(data[0]["input_ids"])
        assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
        assert "<|start_header_id|>assistant<|end_header_id|>" in text


def test_pretrain_corpus_loads_as_stage_pt(tmp_path, tiny_model):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Product {i}: a sturdy red mug with a wide handle.\n" for i in range(30)))
    prepared = tmp_path / "prepared"
    prepare(load_task("shopping_corpus"), {"train": str(corpus)}, prepared)
    args = dict(model_name_or_path=str(tiny_model), stage="pt", do_train=True, finetuning_type="full",
                dataset_dir=str(prepared), dataset="shopping_corpus_train", template="llama3", cutoff_len=64,
                output_dir=str(tmp_path / "o"), overwrite_cache=True, report_to="none")
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    dm = get_dataset(template, model_args, data_args, training_args, stage="pt", **tm)
    assert len(dm["train_dataset"]) >= 1
    assert "sturdy red mug" in tm["tokenizer"].decode(dm["train_dataset"][0]["input_ids"])
