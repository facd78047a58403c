"""Exact launch argv for the distributed shapes, the sbatch script, and recipe errors."""

import shlex
import sys
from pathlib import Path

import pytest

from conftest import REPO, ftk_here, run_ftk
from ftk.errors import FtkError
from ftk.recipe import load_recipe
from ftk.train.plan import Topology, dry_run
from ftk.train.slurm import render_sbatch

S0 = REPO / "configs" / "agnews_llama31_full.yaml"
RUN = Path("runs/agnews_llama31_full-<timestamp>")
CFG = str(RUN / "llamafactory.yaml")


def test_one_node_eight_gpus_zero3():
    (p,) = dry_run(load_recipe(S0))
    assert p.argv == ["torchrun", "--nnodes", "1", "--node-rank", "0", "--nproc-per-node", "8",
                      "--master-addr", "127.0.0.1", "--master-port", "29500",
                      "-m", "llamafactory.launcher", CFG]
    assert p.train_args["deepspeed"] == str(RUN / "deepspeed.json")
    assert p.deepspeed["zero_optimization"]["stage"] == 3


def test_two_nodes_eight_gpus_each_with_rank_from_flags_or_env(monkeypatch):
    r = load_recipe(S0, ["distributed.nnodes=2"])
    (p,) = dry_run(r, Topology(node_rank=1, master_addr="10.1.2.3", master_port=29600))
    assert p.argv == ["torchrun", "--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "8",
                      "--master-addr", "10.1.2.3", "--master-port", "29600",
                      "-m", "llamafactory.launcher", CFG]
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "node-a")
    monkeypatch.setenv("MASTER_PORT", "29700")
    (p,) = dry_run(r, Topology.from_env())
    assert p.argv[3:11] == ["--node-rank", "1", "--nproc-per-node", "8", "--master-addr", "node-a",
                            "--master-port", "29700"]
    (p,) = dry_run(r, Topology.from_env(node_rank=0))  # a flag wins over the environment
    assert p.argv[4] == "0"


def test_deepspeed_on_one_device_still_uses_torchrun():
    r = load_recipe(S0, ["distributed.nproc_per_node=1"])
    (p,) = dry_run(r)
    assert p.argv[0] == "torchrun" and p.argv[6] == "1"
    r = load_recipe(S0, ["distributed.nproc_per_node=1", "distributed.deepspeed=null"])
    (p,) = dry_run(r)
    assert p.argv == ["python", "-m", "llamafactory.launcher", CFG]


def test_sbatch_script_two_nodes():
    r = load_recipe(S0, ["distributed.nnodes=2", "distributed.slurm.partition=gpu",
                         "distributed.slurm.time=24:00:00"])
    plans = dry_run(r)
    text = render_sbatch(r, plans, RUN, python="/opt/venv/bin/python", workdir="/home/me/ftk")
    assert text == f"""#!/bin/bash
#SBATCH --job-name=agnews_llama31_full
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --output='{RUN}/slurm-%j.out'
#SBATCH --partition=gpu
#SBATCH --time=24:00:00

set -euo pipefail
cd /home/me/ftk
export PATH=/opt/venv/bin:$PATH
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export PYTHONWARNINGS=ignore::FutureWarning

# the job records its own state in manifest.json (running, then finished or failed with its code)
ftk_job_ended() {{ python -m ftk.train.jobstate ended '{RUN}' "$1"; }}
trap 'ftk_job_ended $?' EXIT
trap 'exit 143' TERM
python -m ftk.train.jobstate started '{RUN}' $$

# stage main
srun torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:29500" --rdzv-id "$SLURM_JOB_ID" -m llamafactory.launcher '{CFG}'
"""
    srun = text.strip().splitlines()[-1]
    assert shlex.split(srun)[1:] == ["torchrun", "--nnodes", "2", "--nproc-per-node", "8", "--rdzv-backend", "c10d",
                                     "--rdzv-endpoint", "$MASTER_ADDR:29500", "--rdzv-id", "$SLURM_JOB_ID",
                                     "-m", "llamafactory.launcher", CFG]


def test_slurm_writes_script_without_sbatch(tmp_path, synth_dir, tiny_model, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"extends: {REPO / 'configs' / 'agnews_tiny_cpu.yaml'}\nname: sl\n"
                      f"data: {{train: {synth_dir / 'train.csv'}, test: {synth_dir / 'test.csv'}, prepared_dir: {tmp_path / 'p'}}}\n"
                      f"model: {{name_or_path: {tiny_model}}}\nruns_dir: {tmp_path / 'runs'}\n"
                      "distributed: {nnodes: 2, nproc_per_node: 4}\n")
    # a PATH without sbatch (this host may have SLURM installed: the real-scheduler test installs it)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    proc = ftk_here("train", recipe, "--slurm", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    script = (run_dir / "sbatch.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "--nproc-per-node 4" in script
    assert "sbatch not found" in proc.stdout
    assert not (run_dir / "model").exists()  # nothing trained locally


def test_stage_chain_pt_then_sft_continues_the_adapter():
    plans = dry_run(load_recipe(REPO / "configs" / "shopping_yi9b.yaml"))
    assert [p.name for p in plans] == ["pt", "sft"]
    pt, sft = plans
    assert pt.train_args["stage"] == "pt" and pt.train_args["dataset"] == "shopping_corpus_train"
    assert sft.train_args["stage"] == "sft" and sft.train_args["dataset"] == "shopbench_train"
    assert sft.train_args["adapter_name_or_path"] == str(pt.dir / "model")
    assert sft.train_args["model_name_or_path"] == "01-ai/Yi-9B"
    assert pt.dir.name == "stage1-pt" and sft.dir.name == "stage2-sft"


def _recipe_error(tmp_path, text):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {S0}\n" + text)
    with pytest.raises(FtkError) as exc:
        load_recipe(bad)
    return str(exc.value), bad


def test_typo_key_names_file_and_key(tmp_path):
    msg, bad = _recipe_error(tmp_path, "distributed: {nproc_per_nod: 8}\n")
    assert msg.startswith(f"{bad}: ") and "`distributed.nproc_per_nod`: unknown key" in msg


@pytest.mark.parametrize("text, expected", [
    ("llamafactory_args: {predict_with_generate: true}\n",
     "`distributed.deepspeed` z3 with `llamafactory_args.predict_with_generate`"),
    ("method: {quantization_bit: 4}\n", "`method.quantization_bit` 4 needs `method.finetuning_type` lora"),
    ("method: {finetuning_type: lora, quantization_bit: 4}\n", "does not work with `distributed.deepspeed` z3"),
    ("train: {eval_steps: 100}\n", "`train.eval_steps` needs a validation split"),
])
def test_impossible_combinations(tmp_path, text, expected):
    msg, bad = _recipe_error(tmp_path, text)
    assert str(bad) in msg and expected in msg


@pytest.mark.parametrize("key, belongs", [("output_dir", "the run directory"),
                                          ("trust_remote_code", "`model.trust_remote_code`"),
                                          ("learning_rate", "`train.learning_rate`")])
def test_llamafactory_args_cannot_override_what_ftk_sets(tmp_path, key, belongs):
    """`output_dir` sent the model outside the run directory and `trust_remote_code: true` turned it on
    behind `model.trust_remote_code: false`, and validate said OK. (The first through the installed
    script, the others in-process: the same command, without importing LLaMA-Factory twice more.)"""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {S0}\nllamafactory_args: {{{key}: /tmp/elsewhere}}\n")
    proc = (run_ftk if key == "output_dir" else ftk_here)("validate", bad, "--skip-data")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert str(bad) in proc.stderr and f"`llamafactory_args.{key}`: ftk sets this key" in proc.stderr
    assert belongs in proc.stderr


@pytest.mark.parametrize("key, value, why", [
    ("max_samples", 10, "changes the data the model is trained on"),
    ("val_size", 0.1, "changes the data the model is trained on"),
    ("tokenized_path", "/tmp/tok", "changes the data the model is trained on"),
    ("logging_dir", "/tmp/logs", "reads or writes outside the run directory"),
    ("push_to_hub", True, "uploads the model"),
    ("use_unsloth", True, "changes which model code runs"),
    ("some_future_key", 1, "not on ftk's list of LLaMA-Factory keys known to be safe"),
])
def test_llamafactory_args_pass_only_keys_known_to_be_safe(tmp_path, key, value, why):
    """An allowlist, not a denylist (issue 32): keys that changed the data behind ftk's back, wrote
    outside the run, uploaded or swapped the model code slipped through; and so would the next new
    key. Each is refused with its reason, all at once, while a safe key passes."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {S0}\nllamafactory_args: {{{key}: {value}, max_grad_norm: 0.5}}\n")
    proc = ftk_here("validate", bad, "--skip-data")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert str(bad) in proc.stderr and f"`llamafactory_args.{key}`: " in proc.stderr and why in proc.stderr
    assert "max_grad_norm" not in proc.stderr


def test_validate_cli_reports_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {S0}\nllamafactory_args: {{predict_with_generate: true}}\ntrain: {{warmup: 3}}\n")
    proc = run_ftk("validate", bad)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert str(bad) in line and "`train.warmup`: unknown key" in line


def test_validate_catches_unknown_template_and_llamafactory_key(tmp_path):
    from ftk.validate import validate_recipe

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {S0}\nmodel: {{template: llama33}}\nllamafactory_args: {{not_a_key: 1}}\n")
    with pytest.raises(FtkError) as exc:
        validate_recipe(bad)
    msg = str(exc.value)
    assert "`model.template`: 'llama33' is not a LLaMA-Factory template; did you mean 'llama3'?" in msg
    assert "`llamafactory_args.not_a_key`: not on ftk's list of LLaMA-Factory keys known to be safe" in msg


def test_schema_prints_json_schema():
    import json

    proc = run_ftk("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["additionalProperties"] is False and "distributed" in schema["properties"]


def test_s2_dry_run_launches_ftk_trainer_on_two_processes():
    proc = run_ftk("train", "configs/disaster_llama3_clshead_lora.yaml", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "torchrun --nnodes 1 --node-rank 0 --nproc-per-node 2" in proc.stdout
    assert "-m ftk.train.hf.entry" in proc.stdout and "trainer.yaml" in proc.stdout
    assert "kind: sequence_classification" in proc.stdout and "lora_target: q_proj,v_proj" in proc.stdout
    (p,) = dry_run(load_recipe(REPO / "configs" / "disaster_llama3_clshead_lora.yaml"))
    assert p.argv[p.argv.index("-m") + 1] == "ftk.train.hf.entry" and p.config_name == "trainer.yaml"
    m = p.train_args["method"]
    assert (m["lora_rank"], m["lora_alpha"], m["lora_dropout"], m["lora_bias"]) == (16, 16, 0.05, "none")


def test_slurm_script_of_ftk_trainer_runs_its_entry():
    r = load_recipe(REPO / "configs" / "disaster_llama3_clshead_lora.yaml", ["distributed.slurm.partition=gpu"])
    plans = dry_run(r)
    text = render_sbatch(r, plans, plans[0].dir, python="/opt/venv/bin/python", workdir="/home/me/ftk")
    last = text.splitlines()[-1]
    assert last.startswith("srun torchrun --nnodes 1 --nproc-per-node 2 --rdzv-backend c10d")
    assert last.endswith(f"-m ftk.train.hf.entry '{plans[0].dir}/trainer.yaml'")


def test_validate_says_what_packing_changes_besides_speed():
    """Plain packing trained a model to chance in scripts/bench_packing.py (attention across examples),
    and packing at the same batch size cuts the optimizer steps ~8x: both are said, never silent."""
    from ftk.validate import packing_notes, validate_recipe

    plain = packing_notes({"stage": "sft", "packing": True})
    neat = packing_notes({"stage": "sft", "packing": True, "neat_packing": True})
    assert any("fewer optimizer steps" in n for n in plain) and any("fewer optimizer steps" in n for n in neat)
    assert any("prefer neat" in n for n in plain) and not any("prefer neat" in n for n in neat)
    assert any("#8277" in n for n in plain)  # the upstream issue is named
    assert packing_notes({"stage": "sft"}) == [] and packing_notes({"stage": "pt", "packing": True}) == []
    notes = validate_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml", ["train.packing=true"], data="skip").notes
    assert any("prefer neat" in n for n in notes)  # wired into `ftk validate` (and the checks train runs)
