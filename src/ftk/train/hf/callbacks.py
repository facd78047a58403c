"""trainer_log.jsonl for ftk's own trainer, with LLaMA-Factory's LogCallback keys, so the training
screen (train/screen.py), the loss plot and `ftk runs` read both trainers the same way."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

from transformers import TrainerCallback

TRAINER_LOG = "trainer_log.jsonl"


def _hms(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


class TrainerLogCallback(TrainerCallback):
    """Appends one JSON line per log event (rank 0 only), flushed, as LLaMA-Factory does."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, TRAINER_LOG)
        self.start = time.time()
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()
        self.start_step = state.global_step  # > 0 when resumed: ETA from this run's own pace

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        step, total = state.global_step, state.max_steps or 0
        elapsed = time.time() - self.start
        done = step - self.start_step
        remaining = elapsed / done * (total - step) if done > 0 and total else 0.0
        row = {"current_steps": step, "total_steps": total, "loss": logs.get("loss"),
               "eval_loss": logs.get("eval_loss"), "lr": logs.get("learning_rate"), "epoch": logs.get("epoch"),
               "percentage": round(100 * step / total, 2) if total else 100,
               "elapsed_time": _hms(elapsed), "remaining_time": _hms(remaining)}
        row = {k: v for k, v in row.items() if v is not None}
        if "loss" not in row and "eval_loss" not in row:
            return  # the final train summary (train_runtime, ...) lives in trainer_state.json
        os.makedirs(args.output_dir, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
