"""Recipe -> the rendered config of ftk's own trainer (`trainer.yaml` in the run directory): the
method, the model, the data files, and the transformers `TrainingArguments` as they are passed.

Pure (no torch import): `ftk train --dry-run` prints it, `ftk train` writes it and launches
`python -m ftk.train.hf.entry trainer.yaml`.
"""

from __future__ import annotations

from typing import Any

ENTRY_MODULE = "ftk.train.hf.entry"
CONFIG_NAME = "trainer.yaml"


def method_kind(recipe) -> str:
    m = recipe.method
    return "prompt_tuning" if m.finetuning_type == "prompt_tuning" else m.head


def class_weights_for(recipe, data_manifest: dict | None) -> list[float] | None:
    """The loss weights: none, the recipe's list, or scikit-learn's `balanced` weights of the
    prepared train split's label counts (None until the data is prepared)."""
    cw = recipe.method.class_weights
    if cw == "none" or method_kind(recipe) != "sequence_classification":
        return None
    if isinstance(cw, list):
        return [float(w) for w in cw]
    counts = ((data_manifest or {}).get("splits", {}).get("train", {}).get("label_counts"))
    if not counts:
        return None
    from ftk.train.hf.models import balanced_class_weights

    return balanced_class_weights(list(counts.values()))


def render_trainer_config(recipe, *, task_file: str, dataset_dir: str, train_file: str, eval_file: str | None,
                          output_dir: str, prompt_template: str | None, class_weights: list[float] | None,
                          deepspeed_path: str | None = None, resume_from_checkpoint: str | None = None) -> dict:
    m, t = recipe.method, recipe.train
    kind = method_kind(recipe)
    method: dict[str, Any] = {"kind": kind, "finetuning_type": m.finetuning_type}
    if m.finetuning_type == "lora":
        method.update({"lora_rank": m.lora_rank, "lora_alpha": m.lora_alpha, "lora_dropout": m.lora_dropout,
                       "lora_target": m.lora_target, "lora_bias": m.lora_bias})
    if kind == "sequence_classification":
        method["append_eos"] = m.append_eos
        method["class_weights"] = class_weights if class_weights is not None else (
            None if m.class_weights == "none" else "balanced (computed from the prepared train split)")
    if kind == "prompt_tuning":
        method.update({"num_virtual_tokens": m.num_virtual_tokens, "prompt_tuning_init": m.prompt_tuning_init,
                       "prompt_tuning_init_text": (m.prompt_tuning_init_text or prompt_template or "").strip()
                       if m.prompt_tuning_init == "text" else None})
    training: dict[str, Any] = {
        "output_dir": output_dir,
        "learning_rate": t.learning_rate,
        "num_train_epochs": t.num_train_epochs,
        "per_device_train_batch_size": t.per_device_train_batch_size,
        "per_device_eval_batch_size": t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "lr_scheduler_type": t.lr_scheduler_type,
        "warmup_steps": t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio,  # see train/llamafactory.py
        "weight_decay": t.weight_decay,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "report_to": "none" if recipe.tracking.report_to == "none" else [recipe.tracking.report_to],
        "seed": t.seed,
        "data_seed": t.seed,
        "ddp_timeout": t.ddp_timeout,
        "remove_unused_columns": False,
        "disable_tqdm": False,
    }
    if t.precision != "fp32":
        training[t.precision] = True
    for key in ("max_steps", "save_total_limit", "dataloader_num_workers"):
        if getattr(t, key) is not None:
            training[key] = getattr(t, key)
    if eval_file:
        training.update({"eval_strategy": "steps", "eval_steps": t.eval_steps or t.save_steps})
    if recipe.tracking.report_to == "wandb":
        training["run_name"] = recipe.name
    if deepspeed_path:
        training["deepspeed"] = deepspeed_path
    cfg = {
        "model": {"name_or_path": recipe.model.name_or_path, "template": recipe.model.template,
                  "trust_remote_code": recipe.model.trust_remote_code},
        "method": method,
        "task_file": task_file,
        "data": {"dataset_dir": dataset_dir, "train_file": train_file, "eval_file": eval_file,
                 "prompt_template": prompt_template},
        "cutoff_len": t.cutoff_len,
        "training": training,
    }
    if resume_from_checkpoint:
        cfg["resume_from_checkpoint"] = resume_from_checkpoint
    return cfg
