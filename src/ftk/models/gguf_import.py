"""Import a GGUF file (llama.cpp / Ollama) as a normal Hugging Face model folder.

Transformers dequantizes GGUF weights itself (`from_pretrained(..., gguf_file=)`), so the weights are
its (a quantized file's values, dequantized). The tokenizer is not: transformers 5.5.4 turns a GGUF
byte-level BPE vocabulary on a `llama` architecture into a CodeLlama-style tokenizer that encodes
ordinary text to the right ids but sets eos to the bos token, has no pad token and prepends a BOS the
file says not to add (SmolLM2's `add_bos_token: false`). ftk therefore builds the tokenizer from the
GGUF's own metadata (tokens, merges, llama.cpp's pre-tokenizer name, special-token ids, chat template)
and refuses a file whose tokenizer it cannot rebuild faithfully, after checking that text survives an
encode/decode round trip without one unknown token.

The output folder is written under a temporary name and moved into place only when complete, with an
`ftk-import.json` manifest: source file, sha256, quantization, versions.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftk.errors import FtkError
from ftk.fileio import fds_to, no_library_bars, read_json, sha256_file, staged_dir, write_json

MANIFEST_NAME = "ftk-import.json"
GGUF_MAGIC = b"GGUF"

# llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) -> the Hugging Face `tokenizers` pre-tokenizer
# that splits text the same way (the regexes are llama.cpp's / the models' own tokenizer.json).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SUPPORTED_PRE = ("smollm", "gpt-2", "llama-bpe", "llama3", "qwen2")

# Round-trip probes: spaces, digits, punctuation, accents, CJK, emoji, newlines and tabs.
PROBES = (
    "Hello world! Classify: World, Sports, Business or Sci/Tech?",
    "  two  spaces, 3.14159 and 2026-12-02 -- don't, it's, we'll",
    "Ünïcödé café naïve – “quotes” 東京 😀\n\tnew line and tab\n\n",
)


def _pre_tokenizer(name: str):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if name == "smollm":  # single digits, then GPT-2's split
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if name == "gpt-2":
        return byte_level
    split = _LLAMA3_SPLIT if name in ("llama-bpe", "llama3") else _QWEN2_SPLIT
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


@dataclass
class GGUFInfo:
    """What ftk reads from a GGUF header before importing it."""

    architecture: str
    name: str
    file_type: str
    tensor_types: dict[str, int]
    meta: dict[str, Any]
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)  # name -> shape (GGUF order)

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(key, default)


def read_gguf(path: Path) -> GGUFInfo:
    """The header of a GGUF file; FtkError (one line) for anything that is not a whole GGUF file."""
    if not path.is_file():
        raise FtkError("GGUF file not found", path=path)
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise FtkError("not a GGUF file (expected the magic bytes 'GGUF' at its start)", path=path)
    try:
        from gguf import GGUFReader, LlamaFileType

        reader = GGUFReader(str(path))
        meta = {}
        for key, field in reader.fields.items():
            if key.startswith("GGUF."):
                continue
            meta[key] = field.contents()
        counts: dict[str, int] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        size = path.stat().st_size
        for t in reader.tensors:
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
            shapes[str(t.name)] = tuple(int(x) for x in t.shape)
            if int(t.data_offset) + int(t.n_bytes) > size:
                raise ValueError(f"tensor {t.name} runs past the end of the file")
    except FtkError:
        raise
    except Exception as exc:  # numpy/struct errors from a cut or damaged file
        raise FtkError(f"corrupt or truncated GGUF file ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})",
                       path=path) from None
    if not counts:
        raise FtkError("corrupt GGUF file: it holds no tensors", path=path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise FtkError("corrupt GGUF file: no general.architecture", path=path)
    ft = meta.get("general.file_type")
    try:
        file_type = LlamaFileType(int(ft)).name if ft is not None else "unknown"
    except ValueError:
        file_type = f"file_type {ft}"
    return GGUFInfo(architecture=arch, name=str(meta.get("general.name", path.stem)), file_type=file_type,
                    tensor_types=dict(sorted(counts.items())), meta=meta, tensors=shapes)


# Bounds checked on the header before transformers allocates anything from it (a header may claim a
# million layers of tiny tensors: the model would be built, and memory spent, before the load failed).
MAX_BLOCKS = 1024
MAX_WIDTH = 1 << 17  # embedding and feed-forward widths
MAX_VOCAB = 1 << 21
MAX_PARAMETERS = 200_000_000_000


def check_tensors(info: GGUFInfo, path: Path) -> int:
    """The header's sizes agree with its tensors and are bounded: block_count equals the blocks that
    have tensors (each block holding the same tensor kinds as block 0), the token embedding is there
    with the claimed vocabulary and width. Returns the number of weights the file holds."""
    import re

    arch = info.architecture

    def size(key: str, limit: int) -> int:
        value = info.get(f"{arch}.{key}")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
            raise FtkError(f"{arch}.{key} is {value!r}: expected a whole number from 1 to {limit:,}", path=path)
        return value

    blocks = size("block_count", MAX_BLOCKS)
    width = size("embedding_length", MAX_WIDTH)
    if info.get(f"{arch}.feed_forward_length") is not None:
        size("feed_forward_length", MAX_WIDTH)
    vocab = len(info.get("tokenizer.ggml.tokens") or [])
    if not 0 < vocab <= MAX_VOCAB:
        raise FtkError(f"tokenizer.ggml.tokens holds {vocab:,} tokens: expected 1 to {MAX_VOCAB:,}", path=path)
    kinds: dict[int, set[str]] = {}
    for name in info.tensors:
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
        if m:
            kinds.setdefault(int(m.group(1)), set()).add(m.group(2))
    have = sorted(kinds)
    if have != list(range(blocks)):
        shown = f"{have[:5]}{' ...' if len(have) > 5 else ''}" if have else "none"
        raise FtkError(f"{arch}.block_count is {blocks} but the file holds tensors for blocks {shown}: a partial or "
                       "damaged model (the missing layers would be random); not imported", path=path)
    for b in have[1:]:
        if kinds[b] != kinds[0]:
            lost = sorted(kinds[0] ^ kinds[b])[0]
            raise FtkError(f"block {b} and block 0 hold different tensors (blk.{b}.{lost} or blk.0.{lost} missing): "
                           "a partial or damaged model; not imported", path=path)
    embd = info.tensors.get("token_embd.weight")
    if embd is None:
        raise FtkError("the file has no token_embd.weight: a partial or damaged model; not imported", path=path)
    if sorted(embd) != sorted((width, vocab)):
        raise FtkError(f"token_embd.weight has shape {list(embd)}, but the header says {vocab:,} tokens x "
                       f"{arch}.embedding_length {width}: damaged; not imported", path=path)
    total = sum(math.prod(shape) for shape in info.tensors.values())
    if total > MAX_PARAMETERS:
        raise FtkError(f"the file claims {total:,} weights (more than {MAX_PARAMETERS:,}); not imported", path=path)
    return total


def check_supported(info: GGUFInfo, path: Path) -> None:
    """Refuse, in one line, what ftk cannot import faithfully."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if info.architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise FtkError(f"architecture {info.architecture!r} is not supported by transformers' GGUF loader "
                       f"(supported: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})", path=path)
    model = info.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise FtkError(f"tokenizer.ggml.model {model!r} is not supported yet: ftk imports byte-level BPE "
                       "('gpt2') tokenizers (SmolLM, Llama 3, Qwen2), whose rebuild it can verify", path=path)
    pre = info.get("tokenizer.ggml.pre", "gpt-2")
    if pre not in SUPPORTED_PRE:
        raise FtkError(f"tokenizer.ggml.pre {pre!r} is not supported (supported: {', '.join(SUPPORTED_PRE)})",
                       path=path)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
        if not info.get(key):
            raise FtkError(f"corrupt GGUF file: no {key}", path=path)


def build_tokenizer(info: GGUFInfo, path: Path):
    """A PreTrainedTokenizerFast equal to the model's own, from the GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    tokens: list[str] = list(info.get("tokenizer.ggml.tokens"))
    types = list(info.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in info.get("tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise FtkError("corrupt GGUF file: tokenizer.ggml.tokens holds duplicates", path=path)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tk.pre_tokenizer = _pre_tokenizer(info.get("tokenizer.ggml.pre", "gpt-2"))
    tk.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    # 3 = CONTROL, 4 = USER_DEFINED (llama.cpp's token types): matched whole, never split
    tk.add_special_tokens([AddedToken(tokens[i], normalized=False, special=True)
                           for i, t in enumerate(types) if t == 3])
    user = [AddedToken(tokens[i], normalized=False, special=False) for i, t in enumerate(types) if t == 4]
    if user:
        tk.add_tokens(user)

    def special(key: str) -> str | None:
        i = info.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    eos = special("eos")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=special("bos"), eos_token=eos, unk_token=special("unknown"),
        pad_token=special("padding") or eos, chat_template=info.get("tokenizer.chat_template"),
        model_max_length=int(info.get(f"{info.architecture}.context_length", 2048)),
        clean_up_tokenization_spaces=False,
    )
    tok.add_bos_token = bool(info.get("tokenizer.ggml.add_bos_token", False))
    verify_tokenizer(tok, path)
    return tok


def verify_tokenizer(tok, path: Path) -> None:
    """Text must come back unchanged from encode + decode, with no unknown token on the way."""
    from transformers.utils import logging as tlog

    was = tlog.get_verbosity()
    tlog.set_verbosity_error()  # not "longer than the maximum sequence length" for a probe of a small model
    try:
        _round_trips(tok, path)
    finally:
        tlog.set_verbosity(was)


def _round_trips(tok, path: Path) -> None:
    for text in PROBES:
        ids = tok(text, add_special_tokens=False).input_ids
        back = tok.decode(ids)
        if back != text or (tok.unk_token_id is not None and tok.unk_token_id in ids):
            raise FtkError(f"the tokenizer rebuilt from this file does not round-trip text ({text[:30]!r} -> "
                           f"{back[:30]!r}); not imported", path=path)


def import_gguf(gguf_path: str | Path, out_dir: str | Path, *, source: str | None = None) -> dict[str, Any]:
    """Write `out_dir` as a Hugging Face folder (fp32 safetensors, tokenizer, chat template, config,
    ftk-import.json). Returns the manifest. Nothing is left at `out_dir` unless the whole import worked."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    info = read_gguf(gguf_path)
    check_supported(info, gguf_path)
    in_file = check_tensors(info, gguf_path)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FtkError("output folder exists and is not empty (choose a new one)", path=out_dir)
    tok = build_tokenizer(info, gguf_path)
    digest = sha256_file(gguf_path)

    import gguf
    import tokenizers
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from ftk import __version__

    existed = out_dir.exists()
    try:
        with staged_dir(out_dir) as stage:
            # transformers reads the file from its folder by name; a link keeps the copy out of the stage
            src = stage / ".src"
            src.mkdir()
            (src / gguf_path.name).symlink_to(gguf_path.resolve())
            try:
                with fds_to(stage / "ftk-import.log"), no_library_bars():  # transformers' bars and warnings
                    model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=gguf_path.name,
                                                                 dtype=torch.float32)
            except Exception as exc:
                raise FtkError(f"transformers could not load this GGUF file ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:160] if str(exc) else ''})", path=gguf_path) from None
            shutil.rmtree(src)
            check_loaded(model, in_file, gguf_path)
            if tok.pad_token_id is not None:
                model.config.pad_token_id = tok.pad_token_id
                model.generation_config.pad_token_id = tok.pad_token_id
            model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
            model.config.bos_token_id = model.generation_config.bos_token_id = tok.bos_token_id
            model.config.name_or_path = info.name
            with fds_to(stage / "ftk-import.log"):
                model.save_pretrained(stage, safe_serialization=True)
                tok.save_pretrained(stage)
            manifest = {
                "weights_sha256": weights_sha256(stage),
                "source": source or str(gguf_path.resolve()),
                "file": gguf_path.name,
                "sha256": digest,
                "bytes": gguf_path.stat().st_size,
                "name": info.name,
                "architecture": info.architecture,
                "quantization": info.file_type,
                "tensor_types": info.tensor_types,
                "tokenizer": {"model": info.get("tokenizer.ggml.model"), "pre": info.get("tokenizer.ggml.pre"),
                              "vocab": len(tok), "bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token,
                              "chat_template": bool(tok.chat_template)},
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "dtype": "float32",
                "license": info.get("general.license"),
                "versions": {"ftk": __version__, "transformers": transformers.__version__, "gguf": _version(gguf),
                             "tokenizers": tokenizers.__version__, "torch": torch.__version__},
            }
            write_json(stage / MANIFEST_NAME, manifest)
    except BaseException:
        if not existed:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return manifest


def check_loaded(model, in_file: int, path: Path) -> None:
    """Every parameter came from the file (transformers fills what a file lacks with random weights and
    says so only in its log) and every weight is finite."""
    import torch

    params = dict(model.named_parameters())  # tied weights once
    built = sum(p.numel() for p in params.values())
    if built > in_file:
        raise FtkError(f"the model needs {built:,} weights but the file holds {in_file:,}: the rest would be random; "
                       "a partial model, not imported", path=path)
    with torch.no_grad():
        for name, p in params.items():
            if not bool(torch.isfinite(p).all()):
                bad = int((~torch.isfinite(p)).sum())
                raise FtkError(f"{bad:,} weights of {name} are not finite (NaN or infinite): damaged; not imported",
                               path=path)


WEIGHT_FILES = ("*.safetensors",)


def weights_sha256(folder: Path) -> dict[str, str]:
    """sha256 of each weights file in an imported folder (recorded in ftk-import.json, checked by fetch)."""
    return {p.name: sha256_file(p) for pattern in WEIGHT_FILES for p in sorted(Path(folder).glob(pattern))}


def verify_import(out_dir: Path) -> dict:
    """The manifest of an imported folder whose weights are all there and unchanged; FtkError otherwise."""
    manifest = read_json(out_dir / MANIFEST_NAME, what="import manifest", required=("sha256",))
    recorded = manifest.get("weights_sha256")
    if not isinstance(recorded, dict) or not recorded:
        raise FtkError("this import records no weights checksums (made by an older ftk), so its weights cannot be "
                       "verified; remove the folder and import or fetch it again", path=out_dir)
    for name, digest in sorted(recorded.items()):
        weights = out_dir / name
        if not weights.is_file():
            raise FtkError(f"{name} is missing: the folder is incomplete; remove it and import or fetch again",
                           path=out_dir)
        if sha256_file(weights) != digest:
            raise FtkError(f"{name} differs from what was imported (sha256 changed); remove the folder and import "
                           "or fetch again", path=out_dir)
    return manifest


def _version(module) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.__name__)
    except PackageNotFoundError:
        return "unknown"
