"""`ftk export RUN --gguf`: the fine-tuned causal LM as one GGUF file (llama.cpp's tensor names and
layout, the tokenizer, the training chat template) + an Ollama Modelfile. `ftk model import` of the
export gives the merged model's logits exactly at f32; a head cannot go to GGUF (one line, exit 2)."""

import json

import pytest

from conftest import ftk_here, run_ftk


def test_permute_is_what_transformers_undoes():
    """ftk writes q/k rows as llama.cpp's convert does; transformers' GGUF loader reverses exactly that."""
    import numpy as np
    import torch

    from ftk.models.gguf_export import permute

    w = torch.arange(8 * 2 * 6, dtype=torch.float32).reshape(8 * 2, 6)  # 4 heads of dim 4
    p = permute(w, 4, 4).numpy()
    # transformers' reverse_permute_weights (modeling_gguf_pytorch_utils.LlamaConverter)
    n_head, dim = 4, 16 // 4 // 2
    back = p.reshape(n_head, dim, 2, *p.shape[1:]).swapaxes(2, 1).reshape(p.shape)
    assert np.array_equal(back, w.numpy()) and not np.array_equal(p, w.numpy())


def test_the_tokenizer_and_its_pre_tokenizer_are_matched(tiny_model):
    from transformers import AutoTokenizer

    from ftk.models.gguf_export import detect_pre, tokenizer_fields

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert detect_pre(tok) == "gpt-2"  # a plain byte-level BPE (the tiny models)
    f = tokenizer_fields(tok, len(tok) + 3)
    assert f["tokens"][-3:] == [f"[PAD{len(tok) + i}]" for i in range(3)] and f["types"][-1] == 5
    assert f["types"][tok.convert_tokens_to_ids("<|eot_id|>")] == 3 and f["eos"] == tok.eos_token_id
    assert all(" " in m for m in f["merges"])


def test_a_model_ftk_cannot_write_is_one_line(tmp_path):
    from ftk.errors import FtkError
    from ftk.models.gguf_export import write_gguf

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(FtkError, match="Llama-architecture"):
        write_gguf(tmp_path, tmp_path / "x.gguf", chat_template=None, name="x")
    with pytest.raises(FtkError, match="--outtype 'q4'"):
        write_gguf(tmp_path, tmp_path / "x.gguf", outtype="q4", chat_template=None, name="x")
    assert not list(tmp_path.glob("*.gguf*"))


@pytest.mark.slow
def test_gguf_export_round_trips_and_carries_the_training_template(demo_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, run_dir, _ = demo_run
    bad = ftk_here("export", run_dir, "--gguf", "--outtype", "q3", cwd=tmp_path)
    assert bad.returncode == 2 and "--outtype 'q3'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (run_dir / "gguf-last").exists()

    proc = ftk_here("export", run_dir, "--gguf", "--outtype", "f32", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = run_dir / "gguf-last"
    (gguf,) = out.glob("*.gguf")
    info = json.loads((out / "ftk-export.json").read_text())
    assert info["outtype"] == "f32" and info["tensor_types"] == {"F32": info["tensor_types"]["F32"]}
    assert info["prompt_check"]["prompt_ids_equal"] and info["template"] == "llama3"
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./{gguf.name}" in modelfile and 'PARAMETER stop "<|eot_id|>"' in modelfile
    assert "PARAMETER temperature 0" in modelfile and "<|start_header_id|>" in modelfile
    assert not list(run_dir.glob(".*partial"))

    imported = tmp_path / "imported"
    proc = ftk_here("model", "import", gguf, imported, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    merged = run_dir / "export-last"
    tok = AutoTokenizer.from_pretrained(merged)
    ids = tok(["Stocks rallied after the match", "the team won the final"], return_tensors="pt",
              padding=True).input_ids
    a = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(imported, dtype=torch.float32).eval()
    with torch.no_grad():
        la, lb = a(ids).logits, b(ids).logits
    assert torch.equal(la, lb)
    # the imported model's chat template + tokenizer give the prompt ids LLaMA-Factory's template gives
    from ftk.train.prompts import load_template

    template = load_template(AutoTokenizer.from_pretrained(merged), "llama3")
    tok2 = AutoTokenizer.from_pretrained(imported)
    for text in ("Classify: the striker scored twice", "Shares of ACME fell 12% on Monday."):
        want, _ = template.encode_oneturn(tok, [{"role": "user", "content": text}, {"role": "assistant", "content": ""}])
        rendered = tok2.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
        assert tok2(rendered, add_special_tokens=True).input_ids == want

    # q8_0 into another folder: the merged model is reused, the weights are Q8_0 blocks, close logits
    q8 = tmp_path / "q8"
    proc = ftk_here("export", run_dir, "--gguf", "--outtype", "q8_0", "--out", q8, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "using the merged model already exported" in proc.stdout
    assert "Q8_0" in json.loads((q8 / "ftk-export.json").read_text())["tensor_types"]
    assert (q8 / next(q8.glob("*.gguf")).name).stat().st_size < gguf.stat().st_size / 3
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [e["outtype"] for e in manifest["exports"] if "gguf" in e] == ["f32", "q8_0"]
    # the folder is not overwritten
    again = ftk_here("export", run_dir, "--gguf", "--outtype", "f32", cwd=tmp_path)
    assert again.returncode == 2 and "not an empty folder" in again.stderr


@pytest.mark.slow
def test_a_head_cannot_go_to_gguf(demo_run, tmp_path):
    """Checked through the installed script: one line, exit 2, nothing written."""
    _, run_dir, _ = demo_run
    fake = tmp_path / "head-run"
    fake.mkdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["recipe"]["method"] = {"finetuning_type": "lora", "head": "sequence_classification"}
    (fake / "manifest.json").write_text(json.dumps(manifest))
    proc = run_ftk("export", fake, "--gguf", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "sequence classification model cannot go to GGUF" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in fake.iterdir()) == ["manifest.json"]


@pytest.mark.slow
def test_llama_cpp_reads_the_export_as_ftk_does(demo_run, tmp_path):
    """llama.cpp itself (llama-cpp-python, the llamacpp extra): its tokenizer gives ftk's prompt ids for
    every prompt, and through `python -m llama_cpp.server` + `ftk eval --engine openai` its greedy answers
    agree with ftk's own eval (f16 and q8_0, 40 test prompts)."""
    import subprocess
    import sys

    pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed (make llamacpp)")
    from conftest import REPO

    _, run_dir, _ = demo_run
    ref = tmp_path / "ref"
    proc = ftk_here("eval", run_dir, "--limit", "40", "--out", ref, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "check_llamacpp.py"), str(run_dir), "--limit", "40",
                           "--ref", str(ref), "--threads", "1", "--out", str(out)], capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    for outtype, floor in (("f16", 0.99), ("q8_0", 0.97)):
        t = summary["types"][outtype]
        assert t["prompt_ids_equal"] == t["prompts"] == 40, (outtype, t)
        assert t["server_prompt_tokens_differ"] == 0
        assert t["agreement"] >= floor and abs(t["accuracy"] - t["ftk_accuracy_same_items"]) <= 0.05, (outtype, t)
    items = (out / "items-f16.jsonl").read_text().splitlines()
    assert len(items) == 40 and set(json.loads(items[0])) == {"id", "gold", "ftk", "llamacpp"}
    assert "| f16 |" in proc.stdout and "| q8_0 |" in proc.stdout
