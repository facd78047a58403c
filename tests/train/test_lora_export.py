"""LoRA on the tiny model: train with validation, eval through the adapter (no merge), export
the lowest-eval-loss checkpoint, and check the merged weights compute what base + adapter do."""

import json

import pytest

from conftest import REPO, ftk_here

pytestmark = pytest.mark.slow


def test_lora_train_eval_export_best(tmp_path, synth_dir, tiny_model):
    r = tmp_path / "lora.yaml"
    r.write_text(f"extends: {REPO / 'configs' / 'agnews_tiny_cpu.yaml'}\nname: lora\n"
                 f"data: {{train: {synth_dir / 'train.csv'}, test: {synth_dir / 'test.csv'},"
                 f" prepared_dir: {tmp_path / 'prepared'}, val_size: 64}}\n"
                 f"model: {{name_or_path: {tiny_model}}}\nruns_dir: {tmp_path / 'runs'}\n"
                 "method: {finetuning_type: lora, lora_rank: 8, lora_alpha: 16, lora_target: all}\n"
                 "train: {max_steps: 20, eval_steps: 5, save_steps: 5, learning_rate: 5.0e-3}\n"
                 "eval: {limit: 32}\n")
    proc = ftk_here("train", r, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "model" / "adapter_config.json").is_file()
    assert not (run_dir / "model" / "model.safetensors").exists()  # an adapter, not a full model

    proc = ftk_here("eval", run_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run_dir / "eval-test" / "metrics.json").read_text())
    assert m["n"] == 32 and m["adapter"] == str(run_dir / "model") and m["model"] == str(tiny_model)

    state = json.loads((run_dir / "model" / "trainer_state.json").read_text())
    losses = {e["step"]: e["eval_loss"] for e in state["log_history"] if "eval_loss" in e}
    assert sorted(losses) == [5, 10, 15, 20]
    best = min(losses, key=losses.get)
    proc = ftk_here("export", run_dir, "--checkpoint", "best", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"checkpoint {best} (eval_loss" in proc.stdout
    out = run_dir / "export-best"
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, run_dir / "model" / f"checkpoint-{best}").eval()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        a = with_adapter(ids).logits
        b = merged(ids).logits
    assert torch.allclose(a, b, atol=1e-3), (a - b).abs().max()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["exports"][0]["weights"].endswith(f"checkpoint-{best}")
