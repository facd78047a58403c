"""Predictions of classification heads (ftk's own trainer): batched forward passes over inputs sorted
by length, argmax, probabilities kept; persisted and resumed like generated predictions.

- sequence classification: `predict` is the label's target text (so the one extraction and
  metrics module scores it like any output), plus `label_probs` and `label_logit`;
- token classification: one IOB2 tag per word, read off each word's first sub-token (`tags`),
  and `predict` the same entities written as the generative NER target (`type: span` lines).
"""

from __future__ import annotations

from pathlib import Path

from ftk.data import spans
from ftk.data.task import TaskSpec
from ftk.eval.predictions import PREDICTIONS, PredictionsFile, base_row
from ftk.train.hf.data import seq_cls_ids
from ftk.train.hf.models import load_head
from ftk.train.hf.tokens import align, word_tags


def _batches(encoded: list[list[int]], batch_size: int):
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for s in range(0, len(order), batch_size):
        yield order[s:s + batch_size]


def head_info(recipe, task: TaskSpec) -> dict:
    """What a head's ftk_method.json says, for the base model's untrained head (`ftk eval --base`)."""
    from ftk.train.hf.models import head_labels

    kind = recipe.method.head
    return {"kind": kind, "finetuning_type": "full", "labels": head_labels({"kind": kind}, task.labels),
            "append_eos": recipe.method.append_eos}


def predict_heads(records: list[dict], out_dir: Path, *, model_dir: Path, base_model: str, task: TaskSpec,
                  cutoff_len: int, batch_size: int = 32, trust_remote_code: bool = False,
                  file_name: str = PREDICTIONS, info: dict | None = None,
                  info_dir: Path | None = None) -> dict[str, dict]:
    """Predict every record not yet in out_dir/<file_name>; return all rows by id. `info`/`info_dir`:
    the head's description for a checkpoint folder (from the final model) or a base model."""
    import json

    import torch

    out = PredictionsFile(Path(out_dir) / file_name)
    todo = out.todo(records)
    if not todo:
        return out.finish(records)
    untrained = info is not None  # a base model's description, not a trained head's
    if info is None and info_dir is not None and not (Path(model_dir) / "ftk_method.json").is_file():
        info = json.loads((Path(info_dir) / "ftk_method.json").read_text(encoding="utf-8"))
    torch.manual_seed(0)  # a base model's untrained head: the same random head every time
    has_tokenizer = (Path(model_dir) / "tokenizer_config.json").is_file()
    model, tok, info = load_head(model_dir, base_model, trust_remote_code=trust_remote_code, info=info,
                                 tokenizer_dir=None if has_tokenizer or info_dir is None else info_dir,
                                 untrained=untrained)
    labels = info["labels"]
    device = next(model.parameters()).device
    token_level = info["kind"] == "token_classification"
    if token_level:
        aligned = [align(tok, r["tokens"], max_len=cutoff_len) for r in todo]
        encoded = [a.input_ids for a in aligned]
        uncut = [len(align(tok, r["tokens"]).input_ids) for r in todo]
    else:
        encoded = [seq_cls_ids(tok, r, cutoff_len, info.get("append_eos", False)) for r in todo]
        uncut = [len(seq_cls_ids(tok, r, 1 << 30, info.get("append_eos", False))) for r in todo]
    pad = tok.pad_token_id
    with out, torch.inference_mode():
        for idx in _batches(encoded, batch_size):
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # right padding: the head reads the last real token
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            rows = []
            for row, i in enumerate(idx):
                rec, r = todo[i], base_row(todo[i])
                if token_level:
                    tags = word_tags(logits[row].argmax(-1).tolist(), aligned[i].word_starts, labels)
                    r.update({"predict": spans.target_for_tags(rec["tokens"], tags), "tags": tags})
                else:
                    probs = torch.softmax(logits[row], -1).tolist()
                    best = int(logits[row].argmax())
                    r.update({"predict": task.target_for(labels[best]),
                              "label_probs": {lab: round(p, 6) for lab, p in zip(labels, probs)},
                              "label_logit": dict(zip(labels, logits[row].tolist()))})
                if uncut[i] > cutoff_len:  # cut, not merely as long as cutoff_len
                    r["truncated"] = True
                rows.append(r)
            out.add(rows)
    return out.finish(records)
