"""Greedy batched generation with the exact chat template used in training.

Prompts are encoded by LLaMA-Factory's own template code (`encode_oneturn`), so they match the
training tokens exactly. Batches are sorted by length (little padding), left-padded, decoded
greedily, and yielded per batch so the caller can persist them as they finish.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass
class Loaded:
    model: object
    tokenizer: object
    template: object
    stop_ids: list[int]
    device: str


def user_content(record: dict) -> str:
    """LLaMA-Factory's alpaca converter joins instruction and input with one newline."""
    return "\n".join(x for x in (record.get("instruction"), record.get("input")) if x)


def load_template(tokenizer, name: str):
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    return get_template_and_fix_tokenizer(tokenizer, DataArguments(template=name))


def encode_prompt(template, tokenizer, record: dict, cutoff_len: int | None = None) -> list[int]:
    """Token ids of the prompt exactly as LLaMA-Factory builds them for this record."""
    messages = [{"role": "user", "content": user_content(record)},
                {"role": "assistant", "content": record.get("output", "")}]
    prompt_ids, _ = template.encode_oneturn(tokenizer, messages)
    if cutoff_len and len(prompt_ids) > cutoff_len:
        prompt_ids = prompt_ids[:cutoff_len]
    return prompt_ids


def load(model_path: str, template_name: str, *, adapter: str | None = None,
         trust_remote_code: bool = False, device: str | None = None, dtype: str = "auto") -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    template = load_template(tokenizer, template_name)
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype,
                                                 trust_remote_code=trust_remote_code)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.to(device).eval()
    stop_ids = {tokenizer.eos_token_id}
    for word in getattr(template, "stop_words", []) or []:
        tid = tokenizer.convert_tokens_to_ids(word)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            stop_ids.add(tid)
    return Loaded(model, tokenizer, template, sorted(i for i in stop_ids if i is not None), device)


def generate_batches(loaded: Loaded, prompts: Sequence[list[int]], *, batch_size: int = 64,
                     max_new_tokens: int = 16) -> Iterator[tuple[list[int], list[str]]]:
    """Yield (indices, texts) per finished batch; indices refer to `prompts`.

    Longest prompts go first, so an out-of-memory shows at once; on OOM the batch size halves.
    """
    import torch

    tok = loaded.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else loaded.stop_ids[0]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    pos = 0
    bs = max(1, batch_size)
    while pos < len(order):
        idx = order[pos:pos + bs]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            p = prompts[i]
            ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p):] = 1
        try:
            with torch.inference_mode():
                out = loaded.model.generate(
                    input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device),
                    do_sample=False, temperature=None, top_p=None, top_k=None,
                    max_new_tokens=max_new_tokens, eos_token_id=loaded.stop_ids, pad_token_id=pad_id,
                )
        except torch.cuda.OutOfMemoryError:
            if bs == 1:
                raise
            torch.cuda.empty_cache()
            bs = max(1, bs // 2)
            continue
        texts = tok.batch_decode(out[:, width:], skip_special_tokens=True)
        yield idx, texts
        pos += len(idx)


class Throughput:
    """Examples per second, for progress bars and logs."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.n = 0

    def add(self, n: int) -> float:
        self.n += n
        return self.n / max(time.perf_counter() - self.start, 1e-9)
