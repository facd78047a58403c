"""The one module that knows LLaMA-Factory's YAML keys (training, prediction, export)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

VERBOSITY_ENV = "LLAMAFACTORY_VERBOSITY"


@contextlib.contextmanager
def llamafactory_verbosity(level: str) -> Iterator[None]:
    """LLaMA-Factory imported at `level` unless the user chose one; the environment restored after.

    LLaMA-Factory reads the variable once, when its first logger is made, so ftk's own process
    (validation, prompt fitting) stays quiet while a trainer launched later inherits the user's
    environment (`trainer_verbosity`).
    """
    before = os.environ.get(VERBOSITY_ENV)
    if before is None:
        os.environ[VERBOSITY_ENV] = level
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VERBOSITY_ENV, None)


def trainer_verbosity() -> dict[str, str]:
    """The launched trainer's setting: the user's level, else INFO, so train.log holds the whole output."""
    return {VERBOSITY_ENV: os.environ.get(VERBOSITY_ENV) or "INFO"}


def render_train_args(recipe, *, dataset_dir: str, train_dataset: str, output_dir: str,
                      eval_dataset: str | None = None, deepspeed_path: str | None = None,
                      resume_from_checkpoint: str | None = None) -> dict:
    """Recipe -> the LLaMA-Factory training YAML as a dict (keys in LLaMA-Factory's own order)."""
    t, m, d = recipe.train, recipe.method, recipe.distributed
    args: dict[str, Any] = {
        "model_name_or_path": recipe.model.name_or_path,
        "trust_remote_code": recipe.model.trust_remote_code,
        "stage": t.stage,
        "do_train": True,
        "finetuning_type": m.finetuning_type,
    }
    if recipe.model.adapter_name_or_path:
        args["adapter_name_or_path"] = recipe.model.adapter_name_or_path
    if m.finetuning_type == "lora":
        args.update({"lora_rank": m.lora_rank, "lora_alpha": m.lora_alpha,
                     "lora_dropout": m.lora_dropout, "lora_target": m.lora_target})
        if m.quantization_bit:
            args["quantization_bit"] = m.quantization_bit
    elif m.finetuning_type == "freeze":
        args["freeze_trainable_layers"] = m.freeze_trainable_layers
    if deepspeed_path:
        args["deepspeed"] = deepspeed_path
    if d.flash_attn != "auto":
        args["flash_attn"] = d.flash_attn
    args.update({
        "dataset_dir": dataset_dir,
        "dataset": train_dataset,
        "template": recipe.model.template,
        "cutoff_len": t.cutoff_len,
        "overwrite_cache": True,
    })
    if t.preprocessing_num_workers:
        args["preprocessing_num_workers"] = t.preprocessing_num_workers
    if t.dataloader_num_workers is not None:
        args["dataloader_num_workers"] = t.dataloader_num_workers
    args.update({
        "output_dir": output_dir,
        "logging_steps": t.logging_steps,
        "save_steps": t.save_steps,
        "plot_loss": t.plot_loss,
        # A run directory is never reused: ftk makes a new one per run, so nothing is overwritten.
        "overwrite_output_dir": False,
        "report_to": recipe.tracking.report_to,
        "per_device_train_batch_size": t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate,
        "num_train_epochs": t.num_train_epochs,
        "lr_scheduler_type": t.lr_scheduler_type,
        # One key: transformers 5 replaces warmup_steps by any warmup_ratio given (0.0 included), and a
        # warmup_steps below 1 is a ratio of the total steps.
        "warmup_steps": t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio,
        "weight_decay": t.weight_decay,
        "ddp_timeout": t.ddp_timeout,
        "seed": t.seed,
    })
    if t.precision != "fp32":
        args[t.precision] = True
    if t.max_steps:
        args["max_steps"] = t.max_steps
    if t.save_total_limit is not None:
        args["save_total_limit"] = t.save_total_limit
    if t.resize_vocab:
        args["resize_vocab"] = True
    if t.packing:
        args["packing"] = True
        if t.packing == "neat":
            args["neat_packing"] = True
    if eval_dataset:
        args.update({"eval_dataset": eval_dataset, "per_device_eval_batch_size": t.per_device_train_batch_size,
                     "eval_strategy": "steps", "eval_steps": t.eval_steps or t.save_steps})
    if recipe.tracking.report_to == "wandb":
        args["run_name"] = recipe.name
    if resume_from_checkpoint:
        args["resume_from_checkpoint"] = resume_from_checkpoint
    args.update(recipe.llamafactory_args)
    return args


def render_predict_args(*, model_name_or_path: str, template: str, dataset_dir: str, eval_dataset: str,
                        output_dir: str, batch_size: int = 1, max_new_tokens: int = 16, cutoff_len: int = 1024,
                        adapter_name_or_path: str | None = None, trust_remote_code: bool = False) -> dict:
    """LLaMA-Factory's own batch prediction (train with do_predict), greedy instead of its sampling default."""
    args: dict[str, Any] = {
        "model_name_or_path": model_name_or_path,
        "trust_remote_code": trust_remote_code,
        "stage": "sft",
        "do_predict": True,
        "predict_with_generate": True,
        "finetuning_type": "lora" if adapter_name_or_path else "full",
        "dataset_dir": dataset_dir,
        "eval_dataset": eval_dataset,
        "template": template,
        "cutoff_len": cutoff_len,
        "overwrite_cache": True,
        "output_dir": output_dir,
        "overwrite_output_dir": True,
        "per_device_eval_batch_size": batch_size,
        "report_to": "none",
        "do_sample": False,
        "max_new_tokens": max_new_tokens,
    }
    if adapter_name_or_path:
        args["adapter_name_or_path"] = adapter_name_or_path
    return args


def template_names() -> set[str] | None:
    """LLaMA-Factory's chat template names, read from its source without importing it (importing
    pulls in torch and transformers: seconds). None when the source cannot be read that way."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llamafactory")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "template.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    names = {kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "register_template"
             for kw in node.keywords if kw.arg == "name" and isinstance(kw.value, ast.Constant)}
    return names or None


# LLaMA-Factory keys that ftk writes from the recipe or the run itself (render_train_args, above): passing
# them in `llamafactory_args` would silently override the recipe (an output_dir outside the run
# directory, trust_remote_code on while `model.trust_remote_code` is off), so it is refused.
OWNED_KEYS = {
    "model_name_or_path": "`model.name_or_path`", "adapter_name_or_path": "`model.adapter_name_or_path`",
    "trust_remote_code": "`model.trust_remote_code`", "template": "`model.template`",
    "stage": "`train.stage`", "do_train": "the run", "finetuning_type": "`method.finetuning_type`",
    "lora_rank": "`method.lora_rank`", "lora_alpha": "`method.lora_alpha`", "lora_dropout": "`method.lora_dropout`",
    "lora_target": "`method.lora_target`", "quantization_bit": "`method.quantization_bit`",
    "freeze_trainable_layers": "`method.freeze_trainable_layers`", "deepspeed": "`distributed.deepspeed`",
    "flash_attn": "`distributed.flash_attn`", "dataset_dir": "`data.prepared_dir`", "dataset": "`data`",
    "eval_dataset": "`data.val_size` / `data.validation`", "cutoff_len": "`train.cutoff_len`",
    "output_dir": "the run directory (`runs_dir`)", "overwrite_output_dir": "the run directory (never reused)",
    "resume_from_checkpoint": "`ftk train --resume`", "report_to": "`tracking.report_to`", "run_name": "`name`",
    "per_device_train_batch_size": "`train.per_device_train_batch_size`",
    "gradient_accumulation_steps": "`train.gradient_accumulation_steps`", "learning_rate": "`train.learning_rate`",
    "num_train_epochs": "`train.num_train_epochs`", "max_steps": "`train.max_steps`",
    "lr_scheduler_type": "`train.lr_scheduler_type`", "warmup_ratio": "`train.warmup_ratio`",
    "warmup_steps": "`train.warmup_steps`", "weight_decay": "`train.weight_decay`", "seed": "`train.seed`",
    "logging_steps": "`train.logging_steps`", "save_steps": "`train.save_steps`",
    "save_total_limit": "`train.save_total_limit`", "eval_steps": "`train.eval_steps`",
    "bf16": "`train.precision`", "fp16": "`train.precision`", "packing": "`train.packing`",
    "neat_packing": "`train.packing`", "resize_vocab": "`train.resize_vocab`", "plot_loss": "`train.plot_loss`",
    "ddp_timeout": "`train.ddp_timeout`", "dataloader_num_workers": "`train.dataloader_num_workers`",
    "preprocessing_num_workers": "`train.preprocessing_num_workers`",
}


# LLaMA-Factory (and transformers TrainingArguments) keys that `llamafactory_args` may pass through: they
# change how the model trains (optimizer, precision, memory, regularisation, LoRA variants) but not which
# data it sees, where anything is written, what is uploaded or what code runs. Everything else is refused
# with its reason: a denylist misses the next key that does one of those things; this list does not.
SAFE_KEYS = frozenset({
    # optimizer and schedule
    "optim", "optim_args", "optim_target_modules", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "lr_scheduler_kwargs", "label_smoothing_factor", "neftune_noise_alpha", "data_seed", "full_determinism",
    "use_galore", "galore_target", "galore_rank", "galore_update_interval", "galore_scale", "galore_proj_type",
    "galore_layerwise", "use_badam", "badam_mode", "badam_start_block", "badam_switch_mode", "badam_switch_interval",
    "badam_update_ratio", "badam_mask_mode", "badam_verbose", "use_apollo", "apollo_target", "apollo_rank",
    "apollo_update_interval", "apollo_scale", "apollo_proj", "apollo_proj_type", "apollo_scale_type",
    "apollo_layerwise", "apollo_scale_front", "use_adam_mini", "use_muon", "loraplus_lr_ratio",
    "loraplus_lr_embedding",
    # precision, memory and speed
    "tf32", "half_precision_backend", "bf16_full_eval", "fp16_full_eval", "gradient_checkpointing",
    "gradient_checkpointing_kwargs", "disable_gradient_checkpointing", "use_reentrant_gc", "upcast_layernorm",
    "upcast_lmhead_output", "torch_compile", "torch_compile_backend", "torch_compile_mode", "enable_liger_kernel",
    "torch_empty_cache_steps", "low_cpu_mem_usage", "infer_dtype", "compute_dtype", "shift_attn",
    "mixture_of_depths", "rope_scaling", "moe_aux_loss_coef", "disable_shuffling", "group_by_length",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataloader_drop_last",
    "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "average_tokens_across_devices",
    "use_cpu",
    # what the loss sees of each (ftk-prepared) example
    "train_on_prompt", "mask_history", "ignore_pad_token_for_loss",
    # LoRA / freeze variants (the method's own keys are ftk's: method.*)
    "use_rslora", "use_dora", "pissa_init", "pissa_iter", "lora_bias", "additional_target", "create_new_adapter",
    "freeze_extra_modules", "freeze_trainable_modules", "freeze_vision_tower", "freeze_multi_modal_projector",
    "use_llama_pro", "train_mm_proj_only",
    # saving and logging inside the run directory
    "save_strategy", "save_only_model", "save_safetensors", "save_on_each_node", "logging_first_step",
    "logging_strategy", "logging_nan_inf_filter", "include_num_input_tokens_seen", "include_tokens_per_second",
    "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "eval_on_start",
    "eval_accumulation_steps", "per_device_eval_batch_size", "eval_strategy", "disable_tqdm", "log_level",
    "log_level_replica", "print_param_status", "predict_with_generate",
})

# Why the keys that are not passed through are refused, by what they would do behind ftk's back.
REFUSED = {
    **dict.fromkeys(("max_samples", "val_size", "tokenized_path", "streaming", "buffer_size", "mix_strategy",
                     "interleave_probs", "default_system", "tool_format", "enable_thinking", "packing_side",
                     "media_dir", "image_dir", "dataset_dir", "overwrite_cache", "preprocessing_batch_size"),
                    "changes the data the model is trained on behind the prepared data and its manifest (set it in "
                    "the recipe's `data` or `train` section, or prepare the data that way)"),
    **dict.fromkeys(("logging_dir", "cache_dir", "export_dir", "output_dir", "ray_storage_path", "hf_hub_token",
                     "ms_hub_token", "om_hub_token", "swanlab_logdir"),
                    "reads or writes outside the run directory, or carries a credential (not recorded in a manifest)"),
    **dict.fromkeys(("push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo",
                     "hub_always_push", "export_hub_model_id", "use_swanlab", "swanlab_project"),
                    "uploads the model or logs (use `tracking.report_to` for trackers; upload a finished run yourself)"),
    **dict.fromkeys(("trust_remote_code", "use_unsloth", "use_unsloth_gc", "model_revision", "use_kt"),
                    "changes which model code runs or which weights load (use the recipe's `model` section)"),
}


def llamafactory_args_problems(recipe) -> list[str]:
    """Every `llamafactory_args` key that is not passed through, with the reason: set by ftk itself
    (the recipe key it belongs to), refused for what it would do, or not on the list of keys known to
    be safe to pass (SAFE_KEYS)."""
    problems: list[str] = []
    for name, stage in recipe.stage_recipes():
        pre = "" if name == "main" else f"stages.{name}: "
        for key in sorted(map(str, stage.llamafactory_args)):
            if key in OWNED_KEYS:
                why = f"ftk sets this key itself from {OWNED_KEYS[key]}; set it there"
            elif key in REFUSED:
                why = f"refused: it {REFUSED[key]}"
            elif key not in SAFE_KEYS:
                why = ("not on ftk's list of LLaMA-Factory keys known to be safe to pass through (keys that change "
                       "only how the model trains, not its data, outputs, uploads or code: "
                       "ftk.train.llamafactory.SAFE_KEYS)")
            else:
                continue
            problem = f"{pre}`llamafactory_args.{key}`: {why}"
            if problem not in problems:
                problems.append(problem)
    return problems
