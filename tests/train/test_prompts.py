"""Over-long records: training and eval cut the input text the same way, keep the instruction and
the chat template's framing, and LLaMA-Factory's own preprocessing of the fitted records gives
exactly the token ids ftk evaluates with."""

import json
import os

import pytest

from conftest import REALDATA, REPO
from ftk.data.prepare import prepare
from ftk.data.records import read_records
from ftk.data.task import load_task
from ftk.recipe import load_recipe
from ftk.train.prompts import Prompter, fit_for_training, load_template, may_exceed

CUTOFF = 160  # the tiny tokenizer makes the v2 instruction + framing ~125 tokens
HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _lf(tmp_path, tiny_model, dataset_dir, name, **mode):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = dict(model_name_or_path=str(tiny_model), stage="sft", finetuning_type="full",
                dataset_dir=str(dataset_dir), template="llama3", cutoff_len=CUTOFF,
                output_dir=str(tmp_path / "lf_out"), overwrite_cache=True, report_to="none", **mode)
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    dm = get_dataset(template, model_args, data_args, training_args, stage="sft", **tm)
    return dm["train_dataset" if "dataset" in mode else "eval_dataset"], tm["tokenizer"]


@pytest.fixture(scope="module")
def long_news(tmp_path_factory, synth_dir):
    """AG News rows (the real test file when present), many longer than CUTOFF tokens."""
    tmp = tmp_path_factory.mktemp("long")
    src = REALDATA / "ag_news" / "test.csv"
    src = src if src.exists() else synth_dir / "test.csv"
    m = prepare(load_task("agnews"), {"train": str(src), "test": str(src)}, tmp / "prepared",
                max_samples={"train": 120, "test": 120}, seed=3)
    return tmp / "prepared", m


def test_eval_prompts_equal_llamafactory_ids_of_the_fitted_records_and_keep_the_header(
        tmp_path, tiny_model, long_news):
    prepared, _ = long_news
    task = load_task("agnews")
    records = read_records(prepared / "agnews_test.jsonl")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompter = Prompter(tok, load_template(tok, "llama3"), CUTOFF, task.prompt("v2"))
    room = prompter.answer_room([task.target_for(lab) for lab in task.labels])
    ours = [prompter.prompt_ids(r, room) for r in records]
    n_cut = sum(cut for _, cut in ours)
    assert n_cut >= 20, n_cut  # the fixture really exercises truncation
    header = tok.encode(HEADER, add_special_tokens=False)
    for ids, cut in ours:
        assert len(ids) + room <= CUTOFF
        assert ids[-len(header):] == header  # the model is always asked to answer
        if cut:
            assert tok.decode(ids).count("1: World\n2: Sports\n3: Business\n4: Sci/Tech") == 1

    # LLaMA-Factory's own predict preprocessing of the same (fitted) records: identical ids.
    fitted_dir = tmp_path / "fitted"
    fitted_dir.mkdir()
    with open(fitted_dir / "agnews_test.jsonl", "w") as fh:
        for r in records:
            fh.write(json.dumps(prompter.fit(r, room).record) + "\n")
    (fitted_dir / "dataset_info.json").write_text((prepared / "dataset_info.json").read_text())
    lf_rows, _ = _lf(tmp_path, tiny_model, fitted_dir, "test", do_predict=True, predict_with_generate=True,
                     eval_dataset="agnews_test")
    assert len(lf_rows) == len(records)
    for (ids, _), lf_row, rec in zip(ours, lf_rows, records):
        assert lf_row["input_ids"] == ids, rec["id"]


def test_training_rows_are_fitted_so_llamafactory_cuts_nothing(tmp_path, tiny_model, long_news):
    prepared, manifest = long_news
    recipe = load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml", [f"model.name_or_path={tiny_model}", f"data.prepared_dir={prepared}",
                          f"train.cutoff_len={CUTOFF}"])
    dataset_dir, stats = fit_for_training(recipe, manifest)
    assert dataset_dir != str(prepared) and stats["train"]["rows"] == 120
    assert stats["train"]["truncated"] >= 20 and stats["train"]["unfittable"] == 0
    again, stats2 = fit_for_training(recipe, manifest)  # cached: same folder, same counts
    assert (again, stats2) == (dataset_dir, stats)

    lf_rows, tok = _lf(tmp_path, tiny_model, dataset_dir, "train", do_train=True, dataset="agnews_train")
    fitted = read_records(f"{dataset_dir}/agnews_train.jsonl")
    prompter = Prompter(tok, load_template(tok, "llama3"), CUTOFF, load_task("agnews").prompt("v2"))
    header = tok.encode(HEADER, add_special_tokens=False)
    for row, rec in zip(lf_rows, fitted):
        prompt = [i for i, lab in zip(row["input_ids"], row["labels"]) if lab == -100]
        target = [lab for lab in row["labels"] if lab != -100]
        p, t = prompter.encode(rec)
        assert len(row["input_ids"]) <= CUTOFF
        assert prompt == p and target == t  # nothing cut by LLaMA-Factory: the whole answer is trained
        assert prompt[-len(header):] == header

    # Why: on the unfitted records LLaMA-Factory cuts the end of the source, header included.
    raw_rows, _ = _lf(tmp_path, tiny_model, prepared, "train", do_train=True, dataset="agnews_train")
    assert any([i for i, lab in zip(r["input_ids"], r["labels"]) if lab == -100][-len(header):] != header
               for r in raw_rows)


def test_short_data_needs_no_tokenizer_and_no_copy(tmp_path, synth_dir):
    m = prepare(load_task("agnews"), {"train": str(synth_dir / "train.csv")}, tmp_path / "p",
                max_samples={"train": 50})
    recipe = load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml",
                         [f"data.prepared_dir={tmp_path / 'p'}", "train.cutoff_len=4096",
                          "model.name_or_path=not/a/model"])  # never loaded
    assert fit_for_training(recipe, m) == (str(tmp_path / "p"), {"train": {"rows": 50, "truncated": 0,
                                                                             "unfittable": 0}})
    assert not may_exceed({"instruction": "x" * 100, "input": "y" * 100, "output": "z"}, 4096)


def test_embedded_input_is_cut_inside_the_prompt(tiny_model):
    """A prompt with `{input}` inside (FinPhraseBank s3): the text is cut, the suffix stays."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tmpl = "Sentence: {input} : Label : "
    rec = {"id": "x", "instruction": tmpl.replace("{input}", "growth " * 200), "input": "", "output": "positive"}
    prompter = Prompter(tok, load_template(tok, "llama3"), 64, tmpl)
    f = prompter.fit(rec)
    assert f.truncated and f.fits
    assert f.record["instruction"].startswith("Sentence: growth") and f.record["instruction"].endswith(" : Label : ")
    assert sum(map(len, prompter.encode(f.record))) <= 64


def test_instruction_is_cut_when_the_text_is_not_enough(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = load_task("agnews")
    prompter = Prompter(tok, load_template(tok, "llama3"), 96, task.prompt("v2"))
    rec = {"id": "x", "instruction": task.prompt("v2"), "input": "market shares " * 50, "output": "3: Business"}
    f = prompter.fit(rec)
    assert f.truncated and f.fits and f.record["input"] == ""
    assert task.prompt("v2").startswith(f.record["instruction"]) and f.record["instruction"]
    ids, cut = prompter.prompt_ids(rec, 9)
    assert cut and len(ids) + 9 <= 96 and tok.decode(ids).endswith(HEADER)


def test_quieting_llamafactory_leaves_the_environment_a_launched_trainer_inherits(tiny_model, monkeypatch):
    """ftk imports LLaMA-Factory quietly in its own process, but the variable does not stay set:
    a trainer launched afterwards (train.log) must log at the user's level, INFO by default."""
    from transformers import AutoTokenizer

    from ftk.train.llamafactory import llamafactory_verbosity, trainer_verbosity

    monkeypatch.delenv("LLAMAFACTORY_VERBOSITY", raising=False)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    load_template(tok, "llama3")
    assert "LLAMAFACTORY_VERBOSITY" not in os.environ
    with llamafactory_verbosity("ERROR"):
        assert os.environ["LLAMAFACTORY_VERBOSITY"] == "ERROR"
    assert "LLAMAFACTORY_VERBOSITY" not in os.environ
    assert trainer_verbosity() == {"LLAMAFACTORY_VERBOSITY": "INFO"}
    monkeypatch.setenv("LLAMAFACTORY_VERBOSITY", "DEBUG")  # the user's own choice wins and stays
    with llamafactory_verbosity("ERROR"):
        assert os.environ["LLAMAFACTORY_VERBOSITY"] == "DEBUG"
    assert os.environ["LLAMAFACTORY_VERBOSITY"] == "DEBUG"
    assert trainer_verbosity() == {"LLAMAFACTORY_VERBOSITY": "DEBUG"}
