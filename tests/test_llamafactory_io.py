"""Prepared splits load through LLaMA-Factory's own loader, and ftk's prompts equal its tokens."""

import pytest

from ftk.generate import encode_prompt, load_template
from ftk.prepare import prepare, read_records
from ftk.tasks import load_task


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
    template = load_template(tok, "llama3")
    for rec, lf_row in zip(records, lf_eval):
        assert encode_prompt(template, tok, rec) == lf_row["input_ids"], rec["id"]
    # The prompt really holds the chat scaffolding and the text.
    text = tok.decode(lf_eval[0]["input_ids"])
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
