"""The methods LLaMA-Factory lacks, run as a user runs them: `ftk train` / `eval` / `export` / `compare`
on the CPU twins of the S2 and S3 recipes (real data from ../shared/realdata)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PORT_GROUP, REALDATA, REPO, ftk_here, run_ftk, train_past_teardown_abort, twin_overrides

pytestmark = pytest.mark.slow
CONFIGS = REPO / "configs"


@pytest.fixture(autouse=True)
def _needs_realdata():
    if not REALDATA.exists():
        pytest.skip("reads ../shared/realdata")




def _run_dir(tmp):
    (run,) = sorted((tmp / "runs").iterdir())
    return run


def _losses(run):
    rows = [json.loads(line) for line in (run / "model" / "trainer_log.jsonl").open()]
    return [r["loss"] for r in rows if "loss" in r]


def test_token_classification_twin_beats_all_O_and_reports_seqeval(tmp_path, twin_models):
    recipe = CONFIGS / "bionlp_gptneo_tokencls_lora_tiny.yaml"
    proc = ftk_here("train", recipe, *twin_overrides(recipe, tmp_path, twin_models, "data.max_samples={test: 200}"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run = _run_dir(tmp_path)
    assert json.loads((run / "model" / "ftk_method.json").read_text())["labels"][:3] == ["O", "B-DNA", "I-DNA"]
    proc = ftk_here("eval", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "eval-test" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "prepared" / "bionlp2004_test.jsonl").open()]
    all_o = sum(t == "O" for r in rows for t in r["tags"]) / sum(len(r["tags"]) for r in rows)
    assert m["mode"] == "head" and m["n"] == 200 and m["invalid"] == 0
    # ALL_O: tag every word O (0.81 here); the twin's 3 epochs reach 0.851 on these 200 sentences, a head that does
    # not learn stays at all-O, since O is what an untrained majority predictor says.
    assert m["token_accuracy"] >= all_o + 0.02, (m["token_accuracy"], all_o)
    assert {"precision", "recall", "f1", "per_type"} <= set(m) and m["f1"] > 0
    pred = json.loads((run / "eval-test" / "predictions.jsonl").open().readline())
    assert len(pred["tags"]) == len(rows[0]["tokens"])


@pytest.mark.parametrize("recipe", ["fpb_gptneo_prompt_tuning_tiny", "mrpc_gptneo_prompt_tuning_tiny"])
def test_prompt_tuning_twin_learns_and_evaluates_in_both_modes(tmp_path, twin_models, recipe):
    """Mechanics, not accuracy: no baseline threshold here. A random-init tiny model's LM head gives
    near-uniform logits that 8 virtual tokens cannot move (measured on the FPB twin, 300 steps at lr 1.0:
    loss 7.84 -> 7.64, generation all invalid, choice mode the constant majority class), so any accuracy
    bar would be met by chance or by no one. Prompt tuning's learning, against a constant answer, is
    tested on the real SmolLM2: test_real_model.py::test_prompt_tuning_on_smollm2_beats_a_constant_answer."""
    recipe = CONFIGS / f"{recipe}.yaml"
    proc = ftk_here("train", recipe, *twin_overrides(recipe, tmp_path, twin_models, "train.max_steps=40",
                                                     "train.logging_steps=5", "eval.limit=24"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run = _run_dir(tmp_path)
    losses = _losses(run)
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2]), losses  # the loss goes down
    info = json.loads((run / "model" / "ftk_method.json").read_text())
    assert info["trainable_parameters"] == 8 * 128  # 8 virtual tokens x hidden 128, nothing else
    for mode in ("generate", "choice"):
        proc = ftk_here("eval", run, "--mode", mode)
        assert proc.returncode == 0, proc.stderr[-3000:]
    gen = json.loads((run / "eval-test" / "metrics.json").read_text())
    cho = json.loads((run / "eval-test-choice" / "metrics.json").read_text())
    assert gen["n"] == cho["n"] == 24 and cho["invalid"] == 0
    proc = ftk_here("compare", run / "eval-test", run / "eval-test-choice")
    assert proc.returncode == 0 and "McNemar" in proc.stdout
    proc = ftk_here("export", run)
    assert proc.returncode == 0 and (run / "export-last" / "adapter_config.json").is_file()


S2_TWIN = CONFIGS / "disaster_llama3_clshead_lora_tiny.yaml"
S2_QUICK = ("data.max_samples={train: 600, test: 60}", "eval.limit=60")


def test_s2_twin_beats_the_majority_class(tmp_path, twin_models):
    """The sequence-classification head learns real disaster tweets: one epoch over 2,000 train rows
    (125 steps) beats MAJORITY (always the most frequent class of the 300 scored rows, 0.573) by
    MARGIN. Measured here: 0.680. A head that does not learn (frozen, labels misaligned, the wrong
    pooled token) stays at or below the majority class."""
    margin = 0.05
    proc = ftk_here("train", S2_TWIN, *twin_overrides(S2_TWIN, tmp_path, twin_models, "train.num_train_epochs=1",
                                                      "data.max_samples={train: 2000, test: 300}"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run = _run_dir(tmp_path)
    assert ftk_here("eval", run).returncode == 0
    m = json.loads((run / "eval-test" / "metrics.json").read_text())
    gold = [json.loads(line)["label"] for line in (run / "eval-test" / "predictions.jsonl").open()]
    majority = max(gold.count(g) for g in set(gold)) / len(gold)
    assert m["n"] == 300 and m["invalid"] == 0
    assert m["accuracy"] >= majority + margin, (m["accuracy"], majority)

    # Exported, the head predicts the same in plain transformers (no ftk code): its tokenizer appends
    # EOS as ftk did; the twin's pad token is not EOS, the case where the head read another token.
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert ftk_here("export", run).returncode == 0
    tok = AutoTokenizer.from_pretrained(run / "export-last")
    model = AutoModelForSequenceClassification.from_pretrained(run / "export-last").eval()
    assert tok.pad_token_id != tok.eos_token_id
    texts = {json.loads(line)["id"]: json.loads(line)["input"] for line in
             (tmp_path / "prepared" / "disaster_tweets_test.jsonl").open()}
    ours = [json.loads(line) for line in (run / "eval-test" / "predictions.jsonl").open()][:150]
    with torch.no_grad():
        plain = [model.config.id2label[int(model(**tok(texts[p["id"]], return_tensors="pt")).logits.argmax())]
                 for p in ours]
    assert plain == [p["predict"] for p in ours]


@pytest.mark.xdist_group(PORT_GROUP)
def test_s2_twin_under_ddp_then_eval(tmp_path, twin_models):
    proc = train_past_teardown_abort(S2_TWIN, *twin_overrides(S2_TWIN, tmp_path, twin_models, *S2_QUICK, "distributed.nproc_per_node=2",
                                                               "train.max_steps=8", "train.logging_steps=2"),
                                     runs=tmp_path / "runs")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run = _run_dir(tmp_path)
    m = json.loads((run / "manifest.json").read_text())
    assert m["argv"][:1] == ["torchrun"] and m["argv"][m["argv"].index("--nproc-per-node") + 1] == "2"
    assert m["argv"][m["argv"].index("-m") + 1] == "ftk.train.hf.entry"
    assert "world_size=2" in (run / "train.log").read_text().replace(" ", "") or \
        json.loads((run / "model" / "trainer_state.json").read_text())["global_step"] == 8
    weights = m["trainer_args"]["method"]["class_weights"]
    counts = m["data"]["splits"]["train"]["label_counts"]
    n, k = sum(counts.values()), len(counts)
    assert weights == pytest.approx([n / (k * c) for c in counts.values()])  # balanced, recorded in the manifest
    assert m["stages"][0]["method"]["class_weights"] == weights
    proc = ftk_here("eval", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "eval-test" / "metrics.json").read_text())["n"] == 60


@pytest.mark.xdist_group(PORT_GROUP)
def test_s2_twin_under_deepspeed_zero3_then_eval(tmp_path, twin_models):
    proc = train_past_teardown_abort(S2_TWIN, *twin_overrides(S2_TWIN, tmp_path, twin_models, *S2_QUICK, "distributed.nproc_per_node=2",
                                                               "distributed.deepspeed=z3", "train.max_steps=6"),
                                     runs=tmp_path / "runs")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run = _run_dir(tmp_path)
    import yaml

    assert json.loads((run / "deepspeed.json").read_text())["zero_optimization"]["stage"] == 3
    assert yaml.safe_load((run / "trainer.yaml").read_text())["training"]["deepspeed"] == str(run / "deepspeed.json")
    log = (run / "train.log").read_text()
    assert "ZeRO-3 enabled: True" in log and "Initializing TorchBackend in DeepSpeed" in log
    assert "partition_parameters.py" in log  # zero.Init sharded the parameters as the model loaded
    assert (run / "model" / "model.safetensors").is_file()  # the full weights, gathered from the shards
    proc = ftk_here("eval", run)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_s2_twin_resumes_after_kill_9(tmp_path, twin_models):
    args = twin_overrides(S2_TWIN, tmp_path, twin_models, *S2_QUICK, "train.max_steps=40", "train.save_steps=10", "train.logging_steps=5")
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ftk"), "train", str(S2_TWIN), *args], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline, ckpt = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs").glob("*/model/checkpoint-10/trainer_state.json"))
        if found:
            ckpt = found[0].parent
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, (tmp_path / "first.log").read_text()[-3000:]
    run = ckpt.parent.parent
    assert "interrupted" in run_ftk("runs", tmp_path / "runs").stdout
    proc = ftk_here("train", "--resume", run)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    state = json.loads((run / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 40
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "finished" and m["trainer_args"]["resume_from_checkpoint"].startswith(str(run / "model"))
    assert ftk_here("eval", run).returncode == 0


def test_lora_seq_cls_export_merges_adapter_and_head(tmp_path, twin_models):
    import torch
    from transformers import AutoModelForSequenceClassification

    from ftk.train.hf.models import load_head

    proc = ftk_here("train", S2_TWIN, *twin_overrides(S2_TWIN, tmp_path, twin_models, *S2_QUICK, "method.finetuning_type=lora",
                                                 "method.lora_target=q_proj,v_proj", "train.max_steps=6"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    run = _run_dir(tmp_path)
    assert (run / "model" / "adapter_config.json").is_file()
    proc = ftk_here("export", run)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "LoRA merged" in proc.stdout
    base = json.loads((run / "manifest.json").read_text())["recipe"]["model"]["name_or_path"]
    peft_model, tok, _ = load_head(run / "model", base, device="cpu")
    merged = AutoModelForSequenceClassification.from_pretrained(run / "export-last", dtype=torch.float32).eval()
    ids = tok(["forest fire near the town", "lovely sunny afternoon"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a, b = peft_model(**ids).logits, merged(**ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
