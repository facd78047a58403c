
import pytest

from conftest import REPO
from ftk.recipe import load_recipe
from ftk.train.launch import build_train_argv, shell_quote
from ftk.train.plan import Topology, dry_run, plan_stage


def test_single_process_argv():
    assert build_train_argv("r/llamafactory.yaml") == ["python", "-m", "llamafactory.launcher", "r/llamafactory.yaml"]


def test_s0_renders_its_hyperparameters():
    (p,) = dry_run(load_recipe(REPO / "configs" / "agnews_llama31_full.yaml"))
    a = p.train_args
    assert a["model_name_or_path"] == "meta-llama/Llama-3.1-8B-Instruct"
    expected = {"stage": "sft", "finetuning_type": "full", "template": "llama3", "cutoff_len": 4096,
                "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "learning_rate": 2e-5,
                "lr_scheduler_type": "cosine", "warmup_steps": 0.03, "num_train_epochs": 1, "bf16": True,
                "save_steps": 2000, "logging_steps": 1, "plot_loss": True, "report_to": "wandb",
                "resize_vocab": True, "ddp_timeout": 9000, "flash_attn": "fa2",
                "overwrite_output_dir": False, "trust_remote_code": False, "preprocessing_num_workers": 16}
    assert {k: a[k] for k in expected} == expected


def test_shell_quote_keeps_spaces_safe():
    argv = build_train_argv("my runs/cfg.yaml", nproc_per_node=2)
    assert shell_quote(argv).endswith("'my runs/cfg.yaml'")


def test_rendered_yaml_passes_llamafactory_parser(tmp_path, synth_dir, tiny_model):
    """The YAML ftk renders is accepted by LLaMA-Factory's own argument parser."""
    from llamafactory.hparams import get_train_args

    from ftk.data.prepare import prepare
    from ftk.data.task import load_task

    prepared = tmp_path / "prepared"
    m = prepare(load_task("agnews"), {"train": str(synth_dir / "train.csv")}, prepared)
    r = load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml",
                    [f"model.name_or_path={tiny_model}", f"data.prepared_dir={prepared}"])
    p = plan_stage("main", r, tmp_path / "run", m, Topology())
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(dict(p.train_args))
    assert data_args.dataset == ["agnews_train"]
    assert training_args.learning_rate == pytest.approx(1e-3)
    assert finetuning_args.finetuning_type == "full"
    assert model_args.trust_remote_code is False


def test_tiny_tokenizer_learns_from_the_text_the_model_sees(tmp_path, synth_dir):
    """CSV sources: the file's lines. IOB2 (word<TAB>tag per line): the prepared sentences, so the
    tokenizer's pieces are the words as the model meets them (space-prefixed, in sentences)."""
    from conftest import REALDATA
    from ftk.data.prepare import prepare_recipe
    from ftk.train.run import tokenizer_texts

    csv = load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml",
                      [f"data.train={synth_dir / 'train.csv'}", f"data.prepared_dir={tmp_path / 'a'}"])
    first = next(iter(tokenizer_texts(csv)))
    assert first == (synth_dir / "train.csv").read_text().splitlines(keepends=True)[0]
    if not REALDATA.exists():
        pytest.skip("reads ../shared/realdata")
    ner = load_recipe(REPO / "configs" / "bionlp_gptneo_tokencls_lora_tiny.yaml",
                      [f"data.prepared_dir={tmp_path / 'b'}", "data.max_samples={train: 50, test: 10}"])
    prepare_recipe(ner)
    texts = list(tokenizer_texts(ner))
    assert len(texts) == 150 and not any("\t" in t for t in texts)
    from ftk.data.records import read_records

    recs = read_records(tmp_path / "b" / "bionlp2004_train.jsonl")
    assert texts[1::3] == [" ".join(r["tokens"]) for r in recs]  # the sentences, words joined by spaces


@pytest.mark.parametrize("recipe, steps", [("yelp_chatglm3_lora.yaml", 20), ("agnews_llama31_full.yaml", 30),
                                           ("disaster_llama3_clshead_lora.yaml", None)])
def test_warmup_means_what_the_recipe_says_in_both_trainers(recipe, steps):
    """`train.warmup_steps` 20 (S1) warmed up for 0 steps: transformers 5 replaces warmup_steps by any
    warmup_ratio it is given, 0.0 included. Rendered as one key, each trainer's own TrainingArguments
    warm up for the recipe's steps (or its ratio of 1,000 steps)."""
    from transformers import TrainingArguments

    r = load_recipe(REPO / "configs" / recipe)
    (p,) = dry_run(r)
    args = p.train_args if p.trainer == "llamafactory" else p.train_args["training"]
    assert "warmup_ratio" not in args
    ta = TrainingArguments(output_dir="/tmp/unused", warmup_steps=args["warmup_steps"], report_to="none")
    expected = steps if steps is not None else (r.train.warmup_steps or round(1000 * r.train.warmup_ratio))
    assert ta.get_warmup_steps(1000) == expected
