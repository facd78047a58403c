"""Write a Hugging Face causal LM folder (a run's merged export) as one GGUF file for llama.cpp / Ollama.

Written with the `gguf` package's GGUFWriter and quants (llama.cpp's own Python package), the way
llama.cpp's `convert_hf_to_gguf.py` writes a Llama-architecture model:

- tensors under llama.cpp's names (gguf's tensor-name map); the query and key projections permuted from
  Hugging Face's rotate-half layout to llama.cpp's interleaved one; norms always f32; 2-D weights at
  the chosen type (f32, f16, bf16, or q8_0 where a row splits into 32-value blocks, f16 otherwise);
- the tokenizer: byte-level BPE tokens, merges and token types (special tokens CONTROL, other added
  tokens USER_DEFINED, embedding rows beyond the vocabulary `[PAD<i>]` UNUSED), bos / eos / pad ids,
  whether a BOS is added, and llama.cpp's pre-tokenizer name, chosen by encoding probe texts with
  each candidate and keeping the one that gives the model's own ids (llama.cpp picks it by a hash of
  such an encoding);
- the chat template the model was trained with: LLaMA-Factory's template for the recipe, as Jinja.

The file is written under a temporary name and renamed when complete; then ftk rebuilds the tokenizer
from the written file and checks that it encodes the probes to the model's ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ftk.errors import FtkError

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# llama.cpp's pre-tokenizer names, the most specific first (several split plain text the same way)
PRE_CANDIDATES = ("smollm", "llama-bpe", "qwen2", "gpt-2")
# Texts that tell the candidate pre-tokenizers apart: digit runs, contractions, whitespace runs, newlines.
PRE_PROBES = (
    "Hello world! Classify: World, Sports, Business or Sci/Tech?",
    "  two  spaces, 3.14159 and 2026-12-02 -- don't, it's, we'll; I'M HERE",
    "Ünïcödé café naïve – “quotes” 東京 😀\n\tnew line and tab\n\n",
    "123456789 1 22 333 4444 x12y 0.5%  \n\n\n   trailing   ",
    "line one\r\nline two\n\n  indented\tTAB\t\tend ...!!! ???",
)


def _outtype(name: str):
    from gguf import GGMLQuantizationType as Q
    from gguf import LlamaFileType as F

    table = {"f32": (Q.F32, F.ALL_F32), "f16": (Q.F16, F.MOSTLY_F16), "bf16": (Q.BF16, F.MOSTLY_BF16),
             "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0)}
    if name not in table:
        raise FtkError(f"--outtype {name!r}: expected one of {', '.join(OUTTYPES)}")
    return table[name]


def _config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise FtkError("no config.json: not a Hugging Face model folder", path=model_dir)
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("model_type") != "llama" or "LlamaForCausalLM" not in (cfg.get("architectures") or []):
        raise FtkError(f"ftk writes GGUF for Llama-architecture causal LMs (Llama, SmolLM, TinyLlama); this model is "
                       f"{cfg.get('model_type')!r} {cfg.get('architectures')}", path=path)
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind != "default":
        raise FtkError(f"rope scaling {kind!r} is not written to GGUF by ftk yet (only unscaled rotary embeddings)",
                       path=path)
    return cfg


def _state_dict(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FtkError("no *.safetensors weights (export the run first)", path=model_dir)
    out: dict = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def permute(w, n_head: int, n_head_kv: int | None = None):
    """Hugging Face's rotate-half q/k rows -> llama.cpp's interleaved pairs (convert_hf_to_gguf's permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(state: dict, cfg: dict, qtype, path: Path):
    """(gguf name, numpy data, raw dtype or None) for every weight, in a stable order."""
    import gguf
    import numpy as np
    import torch

    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    tied = cfg.get("tie_word_embeddings", False)
    for hf_name in sorted(state):
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise FtkError(f"tensor {hf_name!r} has no llama.cpp name (not a plain Llama model)", path=path)
        w = state[hf_name].to(torch.float32)
        if hf_name.endswith("q_proj.weight"):
            w = permute(w, n_head, n_head)
        elif hf_name.endswith("k_proj.weight"):
            w = permute(w, n_head, n_kv)
        data = w.numpy()
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            yield name, data.astype(np.float32), None
        elif qtype == gguf.GGMLQuantizationType.F16 or (
                qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32):
            yield name, data.astype(np.float16), None  # llama.cpp's fallback for rows that do not block
        else:
            yield name, gguf.quants.quantize(data, qtype), qtype


def detect_pre(tokenizer, hint: str | None = None) -> str:
    """llama.cpp's pre-tokenizer name whose split gives this tokenizer's ids on every probe text."""
    from tokenizers import Tokenizer

    from ftk.models.gguf_import import _pre_tokenizer

    backend = tokenizer.backend_tokenizer
    want = [backend.encode(t, add_special_tokens=False).ids for t in PRE_PROBES]
    mine = json.loads(backend.to_str()).get("pre_tokenizer")
    same = [n for n in PRE_CANDIDATES if json.loads(_as_json(_pre_tokenizer(n))) == mine]  # the very same split
    order = ([hint] if hint in PRE_CANDIDATES else []) + same + list(PRE_CANDIDATES)
    for name in dict.fromkeys(order):
        trial = Tokenizer.from_str(backend.to_str())
        trial.pre_tokenizer = _pre_tokenizer(name)
        if [trial.encode(t, add_special_tokens=False).ids for t in PRE_PROBES] == want:
            return name
    raise FtkError(f"this tokenizer splits text unlike every llama.cpp pre-tokenizer ftk can name "
                   f"({', '.join(PRE_CANDIDATES)}): llama.cpp would tokenize it differently")


def _as_json(pre) -> str:
    from tokenizers import Tokenizer, models

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre
    return json.dumps(json.loads(t.to_str())["pre_tokenizer"])


def tokenizer_fields(tokenizer, n_vocab: int, hint: str | None = None) -> dict[str, Any]:
    """The tokenizer.ggml.* metadata of a byte-level BPE tokenizer."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE" or not model.get("merges"):
        raise FtkError(f"ftk writes byte-level BPE tokenizers to GGUF; this one is {model.get('type')!r}")
    vocab = tokenizer.get_vocab()
    if len(vocab) > n_vocab:
        raise FtkError(f"the tokenizer has {len(vocab):,} tokens but the embedding only {n_vocab:,} rows")
    by_id: dict[int, str] = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    added = {a.content: a for a in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()}
    for i in range(n_vocab):
        tok = by_id.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(5)  # UNUSED
        else:
            tokens.append(tok)
            types.append(3 if tok in added and added[tok].special else 4 if tok in added else 1)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    probe = tokenizer("a", add_special_tokens=True).input_ids
    return {"tokens": tokens, "types": types, "merges": merges, "pre": detect_pre(tokenizer, hint),
            "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
            "unk": tokenizer.unk_token_id,
            "add_bos": bool(tokenizer.bos_token_id is not None and probe and probe[0] == tokenizer.bos_token_id)}


def write_gguf(model_dir: str | Path, out_file: str | Path, *, outtype: str = "f16", chat_template: str | None,
               name: str, pre_hint: str | None = None) -> tuple[dict[str, Any], Any]:
    """model_dir (Hugging Face Llama folder) -> out_file (GGUF). Returns what was written, and the
    tokenizer rebuilt from the written file (as `ftk model import` and llama.cpp read it)."""
    import gguf
    from transformers import AutoTokenizer

    model_dir, out_file = Path(model_dir), Path(out_file)
    qtype, ftype = _outtype(outtype)
    cfg = _config(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    state = _state_dict(model_dir)
    n_vocab = int(state["model.embed_tokens.weight"].shape[0])
    tok = tokenizer_fields(tokenizer, n_vocab, pre_hint)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    rope = cfg.get("rope_parameters") or {}
    tmp = out_file.with_name(f".{out_file.name}.partial")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(tmp), "llama")
    try:
        w.add_name(name)
        w.add_file_type(int(ftype))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
        w.add_embedding_length(int(cfg["hidden_size"]))
        w.add_block_count(int(cfg["num_hidden_layers"]))
        w.add_feed_forward_length(int(cfg["intermediate_size"]))
        w.add_head_count(int(cfg["num_attention_heads"]))
        w.add_head_count_kv(int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]))
        w.add_rope_freq_base(float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))))
        w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
        w.add_rope_dimension_count(int(head_dim))
        w.add_vocab_size(n_vocab)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(tok["pre"])
        w.add_token_list(tok["tokens"])
        w.add_token_types(tok["types"])
        w.add_token_merges(tok["merges"])
        for key in ("bos", "eos", "pad", "unk"):
            if tok[key] is not None:
                getattr(w, {"unk": "add_unk_token_id"}.get(key, f"add_{key}_token_id"))(int(tok[key]))
        w.add_add_bos_token(tok["add_bos"])
        if chat_template:
            w.add_chat_template(chat_template)
        kinds: dict[str, int] = {}
        for tname, data, raw in _tensors(state, cfg, qtype, model_dir):
            w.add_tensor(tname, data, raw_dtype=raw)
            kind = raw.name if raw is not None else {"float32": "F32", "float16": "F16"}[str(data.dtype)]
            kinds[kind] = kinds.get(kind, 0) + 1
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out_file)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    rebuilt = check_tokenizer(out_file, tokenizer)
    return {"file": out_file.name, "outtype": outtype, "tensor_types": dict(sorted(kinds.items())),
            "tokenizer": {"pre": tok["pre"], "vocab": n_vocab, "bos": tok["bos"], "eos": tok["eos"], "pad": tok["pad"],
                          "add_bos": tok["add_bos"]}, "chat_template": bool(chat_template)}, rebuilt


def check_tokenizer(gguf_file: Path, tokenizer):
    """The tokenizer rebuilt from the written file (as `ftk model import` rebuilds it), which must give
    the model's ids on every probe; else the file is removed."""
    from ftk.models.gguf_import import build_tokenizer, read_gguf

    try:
        rebuilt = build_tokenizer(read_gguf(gguf_file), gguf_file)
        for text in PRE_PROBES:
            if rebuilt(text, add_special_tokens=True).input_ids != tokenizer(text, add_special_tokens=True).input_ids:
                raise FtkError(f"the written tokenizer encodes {text[:30]!r} differently from the model's", path=gguf_file)
    except BaseException:
        gguf_file.unlink(missing_ok=True)
        raise
    return rebuilt


def ollama_modelfile(template, tokenizer, gguf_name: str) -> str:
    """An Ollama Modelfile: the GGUF, LLaMA-Factory's template for the recipe as Ollama's TEMPLATE, its
    default system prompt, the template's stop tokens, greedy decoding."""
    text = template.get_ollama_modelfile(tokenizer)
    text = text.replace("# ollama modelfile auto-generated by llamafactory", "# Ollama Modelfile written by ftk export "
                        "(template: LLaMA-Factory's, as the model was trained)")
    text = text.replace("FROM .\n", f"FROM ./{gguf_name}\n", 1)
    stops = {tokenizer.convert_ids_to_tokens(i) for i in template.get_stop_token_ids(tokenizer)}
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        text += f'PARAMETER stop "{tokenizer.eos_token}"\n'
    return text + "PARAMETER temperature 0\n"
