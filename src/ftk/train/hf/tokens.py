"""Word-level tags <-> sub-token labels for token classification (S3's BioNLP2004 setup).

Each word is tokenized on its own (a space before every word but the first, as in the joined
sentence), so word boundaries are known exactly for any tokenizer, fast or not, with or without
`word_ids()`. The word's tag goes on its first sub-token; every other position is -100 (ignored
by the loss). Reading predictions back takes the first sub-token of each word; a word cut off by
`max_len` reads as "O".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IGNORE = -100


def tag_set(entity_types: Sequence[str]) -> list[str]:
    """IOB2 tags of a task's entity types, "O" first (label id 0)."""
    return ["O"] + [f"{p}-{t}" for t in entity_types for p in ("B", "I")]


@dataclass
class Aligned:
    input_ids: list[int]
    labels: list[int]  # tag id on each word's first sub-token, -100 elsewhere
    word_starts: list[int | None]  # position of each word's first sub-token (None: cut off)


def align(tokenizer, words: Sequence[str], tag_ids: Sequence[int] | None = None, max_len: int | None = None) -> Aligned:
    """Token ids for `words` (BOS first when the tokenizer uses one) with first-sub-token labels."""
    ids: list[int] = []
    labels: list[int] = []
    bos = tokenizer.bos_token_id if getattr(tokenizer, "add_bos_token", True) and tokenizer.bos_token_id is not None \
        else None
    if bos is not None:
        ids.append(bos)
        labels.append(IGNORE)
    starts: list[int | None] = []
    for i, word in enumerate(words):
        pieces = tokenizer.encode(word if i == 0 else " " + word, add_special_tokens=False) or \
            [tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id]
        if max_len is not None and len(ids) + 1 > max_len:
            starts.append(None)
            continue
        starts.append(len(ids))
        for j, piece in enumerate(pieces):
            if max_len is not None and len(ids) >= max_len:
                break
            ids.append(piece)
            labels.append(tag_ids[i] if tag_ids is not None and j == 0 else IGNORE)
    return Aligned(ids, labels, starts)


def word_tags(pred_ids: Sequence[int], word_starts: Sequence[int | None], tags: Sequence[str]) -> list[str]:
    """One tag per word, read off its first sub-token ("O" for a word cut off by max_len)."""
    return [tags[pred_ids[s]] if s is not None and s < len(pred_ids) else "O" for s in word_starts]
