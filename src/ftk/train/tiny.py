"""Build a tiny random-init LLaMA-architecture model and a byte-level BPE tokenizer.

No weights can be downloaded here, so tests and the demo build their own model: the tokenizer
is trained on the task's text and carries the Llama 3 special tokens and chat template, so
LLaMA-Factory's `llama3` template adds no tokens and encodes exactly as for a real Llama 3.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ftk.fileio import no_library_bars, staged_dir

LLAMA3_SPECIAL = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|eom_id|>", "<|finetune_right_pad_id|>",
]

LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def train_tokenizer(lines: Iterable[str], vocab_size: int = 4096):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=LLAMA3_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    # Chat scaffolding words are in every training example: give them merges too.
    scaffold = ["user", "assistant", "system", "\n\n"]
    tok.train_from_iterator(list(lines) + scaffold * 100, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        chat_template=LLAMA3_CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_tiny_model(out_dir: str | Path, texts: Iterable[str], *, hidden_size: int = 128,
                     num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                     vocab_size: int = 4096, max_positions: int = 2048, seed: int = 0) -> Path:
    """Train the tokenizer on `texts`, init a LlamaForCausalLM with `seed`, save both to out_dir."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end_of_text|>")],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    out_dir = Path(out_dir)
    with staged_dir(out_dir) as stage, no_library_bars():  # no "Writing model shards" bar
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
    return out_dir
