"""Prepared records -> tokenized training examples and their collators, one function per method."""

from __future__ import annotations

from collections.abc import Sequence

from ftk.data.records import user_content
from ftk.train.hf.tokens import IGNORE, align, tag_set


def text_of(record: dict) -> str:
    """What a classification head reads: the task's input text (the instruction is the same for
    every row and tells a head nothing), or the whole user turn when the prompt embeds the input."""
    return record.get("input") or user_content(record)


def seq_cls_ids(tokenizer, record: dict, max_len: int, append_eos: bool = True) -> list[int]:
    """A classification head's input ids: the text, truncated, ending with the end-of-sequence token
    when `append_eos` (the head then always reads the same final token)."""
    ids = tokenizer(text_of(record), truncation=True, max_length=max_len)["input_ids"]
    eos = tokenizer.eos_token_id
    if append_eos and eos is not None and (not ids or ids[-1] != eos):
        ids = ids[: max_len - 1] + [eos]
    return ids


def seq_cls_examples(records: Sequence[dict], tokenizer, labels: Sequence[str], max_len: int,
                     append_eos: bool = True) -> list[dict]:
    index = {lab: i for i, lab in enumerate(labels)}
    out = []
    for r in records:
        ids = seq_cls_ids(tokenizer, r, max_len, append_eos)
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": index[r["label"]]})
    return out


def token_cls_examples(records: Sequence[dict], tokenizer, entity_types: Sequence[str], max_len: int) -> list[dict]:
    tags = {t: i for i, t in enumerate(tag_set(entity_types))}
    out = []
    for r in records:
        a = align(tokenizer, r["tokens"], [tags[t] for t in r["tags"]], max_len)
        out.append({"input_ids": a.input_ids, "attention_mask": [1] * len(a.input_ids), "labels": a.labels})
    return out


def lm_examples(records: Sequence[dict], prompter) -> list[dict]:
    """Prompt + target ids as LLaMA-Factory encodes them (fitted to the prompter's cutoff_len), the
    loss on the target only (as its supervised preprocessing)."""
    out = []
    eos = [prompter.tokenizer.eos_token_id] if prompter.eos_extra else []
    for r in records:
        prompt, target = prompter.encode(prompter.fit(r).record)
        target = target + eos
        out.append({"input_ids": prompt + target, "attention_mask": [1] * (len(prompt) + len(target)),
                    "labels": [IGNORE] * len(prompt) + target})
    return out


def collator(kind: str, tokenizer):
    from transformers import DataCollatorForSeq2Seq, DataCollatorForTokenClassification, DataCollatorWithPadding

    if kind == "sequence_classification":
        return DataCollatorWithPadding(tokenizer)
    if kind == "token_classification":
        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE, padding=True)
