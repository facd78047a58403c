"""Models for ftk's own trainer: a classification head on a causal LM's backbone, or a causal LM
with PEFT prompt tuning; LoRA (SEQ_CLS / TOKEN_CLS, head trained and saved with the adapter) or
full fine-tuning; the class-weighted cross-entropy S2 used."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import Trainer

from ftk.fileio import no_library_bars
from ftk.train.hf.tokens import IGNORE, tag_set


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """scikit-learn's compute_class_weight("balanced") for label counts (n / (k * count_c))."""
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    y = np.repeat(np.arange(len(counts)), counts)
    return [float(w) for w in compute_class_weight("balanced", classes=np.arange(len(counts)), y=y)]


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The model's tokenizer; a model without a pad token pads with end-of-sequence (as S2 did)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def saveable(tokenizer, *, append_eos: bool = False):
    """The tokenizer as a run or an export saves it: without the truncation that encoding with
    `max_length` leaves switched on in a fast tokenizer (it was written into tokenizer.json), and,
    for a sequence head trained with `append_eos`, ending every encoding with end-of-sequence, so that
    plain `tokenizer(text)` / `pipeline(...)` feed the head the very ids it was trained on."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer
    backend.no_truncation()
    if append_eos and tokenizer.eos_token_id is not None:
        from tokenizers import processors

        eos = processors.TemplateProcessing(single=f"$A {tokenizer.eos_token}", pair=f"$A $B {tokenizer.eos_token}",
                                            special_tokens=[(tokenizer.eos_token, tokenizer.eos_token_id)])
        before = backend.post_processor
        backend.post_processor = eos if before is None else processors.Sequence([before, eos])
    return tokenizer


def head_labels(method: dict, task_labels: Sequence[str]) -> list[str]:
    return tag_set(task_labels) if method["kind"] == "token_classification" else list(task_labels)


@contextlib.contextmanager
def new_head_expected():
    """Loading a causal LM's weights into a *ForSequence/TokenClassification model: the head is new
    (then trained, or restored from the adapter) by design, so transformers' MISSING-key report is
    noise on the terminal; real errors still raise."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def build_model(method: dict, model_path: str, tokenizer, labels: Sequence[str], *, trust_remote_code: bool = False,
                dtype=None):
    """The model to train, PEFT-wrapped for LoRA and prompt tuning."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification

    kind = method["kind"]
    common = dict(trust_remote_code=trust_remote_code, dtype=dtype or torch.float32)
    if kind == "prompt_tuning":
        model = AutoModelForCausalLM.from_pretrained(model_path, **common)
    else:
        auto = AutoModelForSequenceClassification if kind == "sequence_classification" else AutoModelForTokenClassification
        with new_head_expected():
            model = auto.from_pretrained(model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                         label2id={lab: i for i, lab in enumerate(labels)}, **common)
    model.config.pad_token_id = tokenizer.pad_token_id
    return wrap_peft(model, method, model_path)


def wrap_peft(model, method: dict, model_path: str):
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    ft = method["finetuning_type"]
    if ft == "full":
        return model
    if ft == "prompt_tuning":
        text = method.get("prompt_tuning_init_text")
        cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=method["num_virtual_tokens"],
                                 prompt_tuning_init=PromptTuningInit.TEXT if method["prompt_tuning_init"] == "text"
                                 else PromptTuningInit.RANDOM,
                                 prompt_tuning_init_text=text if method["prompt_tuning_init"] == "text" else None,
                                 tokenizer_name_or_path=model_path if method["prompt_tuning_init"] == "text" else None)
        return get_peft_model(model, cfg)
    task_type = TaskType.SEQ_CLS if method["kind"] == "sequence_classification" else TaskType.TOKEN_CLS
    target = method["lora_target"]
    cfg = LoraConfig(task_type=task_type, r=method["lora_rank"], lora_alpha=method["lora_alpha"],
                     lora_dropout=method["lora_dropout"], bias=method["lora_bias"],
                     target_modules="all-linear" if target == "all" else [t.strip() for t in target.split(",")])
    return get_peft_model(model, cfg)  # SEQ_CLS / TOKEN_CLS add the head to modules_to_save


def load_head(model_dir: Path, base_model: str, *, trust_remote_code: bool = False, device: str | None = None,
              info: dict | None = None, tokenizer_dir: Path | None = None, untrained: bool = False):
    """(model, tokenizer, info) of a trained head: full weights, or the base model + LoRA adapter (head
    included through modules_to_save). A checkpoint folder takes `info` from the final model;
    `untrained`: a base model, whose head is new (and said to be)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from ftk.errors import FtkError

    info_path = Path(model_dir) / "ftk_method.json"
    if info is None and not info_path.is_file():
        raise FtkError("no ftk_method.json: not a model trained by ftk's head trainer", path=model_dir)
    info = info or json.loads(info_path.read_text(encoding="utf-8"))
    labels = info["labels"]
    auto = AutoModelForSequenceClassification if info["kind"] == "sequence_classification" \
        else AutoModelForTokenClassification
    tokenizer = load_tokenizer(str(tokenizer_dir or model_dir), trust_remote_code)
    kwargs = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                  label2id={lab: i for i, lab in enumerate(labels)}, trust_remote_code=trust_remote_code,
                  dtype=torch.float32)
    with no_library_bars():
        if (Path(model_dir) / "adapter_config.json").is_file():
            from peft import PeftModel

            with new_head_expected():  # the head comes with the adapter (modules_to_save)
                base = auto.from_pretrained(base_model, **kwargs)
            model = PeftModel.from_pretrained(base, str(model_dir))
        elif untrained:  # a base model: no trained head
            print("[ftk] the base model has no trained head: a seeded random head (near chance by design)",
                  flush=True)
            with new_head_expected():
                model = auto.from_pretrained(str(model_dir), **kwargs)
        else:
            model = auto.from_pretrained(str(model_dir), **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer, info


class WeightedLossTrainer(Trainer):
    """A classification head's cross-entropy (labels -100 ignored), class-weighted when asked, averaged
    over the whole optimizer step as transformers' own losses are: sum(w * ce) / sum(w) over every
    micro-batch of the step (`num_items_in_batch`, here a weight sum), so gradient accumulation 4 x 4
    makes the update that one batch of 16 makes. Prompt tuning (`head=False`) keeps the model's LM loss."""

    def __init__(self, *args, class_weights: Sequence[float] | None = None, head: bool = True, **kwargs):
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        if head:
            kwargs["compute_loss_func"] = self._head_loss
        super().__init__(*args, **kwargs)

    def _head_loss(self, outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        if num_items_in_batch is None:
            return weighted_cross_entropy(logits, labels, self.class_weights)
        return cross_entropy_sum(logits, labels, self.class_weights)[0] / num_items_in_batch

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        if self.class_weights is None or self.compute_loss_func is None or not batch_samples \
                or "labels" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        total = sum(label_weight(b["labels"], self.class_weights) for b in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total


def label_weight(labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The weight sum of the counted labels (their number when unweighted)."""
    kept = labels.reshape(-1)[labels.reshape(-1) != IGNORE]
    return weights.to(kept.device)[kept].sum() if weights is not None else torch.tensor(float(kept.numel()))


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None):
    """(sum of w * ce over the counted labels, their weight sum)."""
    k = logits.shape[-1]
    w = weights.to(logits.device) if weights is not None else None
    total = torch.nn.functional.cross_entropy(logits.reshape(-1, k).float(), labels.reshape(-1), weight=w,
                                              ignore_index=IGNORE, reduction="sum")
    return total, label_weight(labels, weights).to(total.device)


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The head's loss over one batch: torch's weighted mean, sum(w * ce) / sum(w)."""
    total, weight = cross_entropy_sum(logits, labels, weights)
    return total / weight
