"""DeepSpeed ZeRO presets (`distributed.deepspeed: z0|z2|z3|z3_offload`), written into the run
directory as deepspeed.json. "auto" values are filled in by the HF Trainer from the training args."""

from __future__ import annotations

from typing import Any


def _zero_config(stage: int, offload: bool = False) -> dict:
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 3:
        zero.update({
            "sub_group_size": 1e9,
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            "stage3_gather_16bit_weights_on_model_save": True,
        })
        if offload:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    elif stage == 2:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": 5e8,
                     "reduce_scatter": True, "round_robin_gradients": True})
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000,
                 "initial_scale_power": 16, "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
    }


DEEPSPEED_PRESETS = {
    "z0": lambda: _zero_config(0),
    "z2": lambda: _zero_config(2),
    "z3": lambda: _zero_config(3),
    "z3_offload": lambda: _zero_config(3, offload=True),
}


def deepspeed_config(preset: str) -> dict:
    return DEEPSPEED_PRESETS[preset]()
