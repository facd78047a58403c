"""`python -m ftk.train.hf.entry trainer.yaml`: ftk's own training process, for the methods
LLaMA-Factory lacks. Launched like LLaMA-Factory's (plain, torchrun on one or many nodes,
DeepSpeed, SLURM): transformers' Trainer handles the distribution, PEFT the adapters.

Reads top to bottom: config -> TrainingArguments (first, so DeepSpeed ZeRO-3 shards the model as it
loads) -> seed -> task, tokenizer, examples -> model -> Trainer -> train (or resume) -> save model,
tokenizer, trainer state and `ftk_method.json` (what eval needs to load the model back).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

METHOD_FILE = "ftk_method.json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ftk.train.hf.entry trainer.yaml", file=sys.stderr)
        return 2
    cfg = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import TrainingArguments, set_seed

    from ftk.data.records import read_records
    from ftk.data.task import load_task
    from ftk.train.hf import data as D
    from ftk.train.hf.callbacks import TrainerLogCallback
    from ftk.train.hf.models import WeightedLossTrainer, build_model, head_labels, load_tokenizer, saveable

    args = TrainingArguments(**cfg["training"])
    set_seed(args.seed)
    method, model_cfg = cfg["method"], cfg["model"]
    kind = method["kind"]
    task = load_task(cfg["task_file"])
    tokenizer = load_tokenizer(model_cfg["name_or_path"], model_cfg["trust_remote_code"])
    labels = head_labels(method, task.labels)
    cutoff = cfg["cutoff_len"]
    if kind == "sequence_classification":
        def make(recs):
            return D.seq_cls_examples(recs, tokenizer, labels, cutoff, method.get("append_eos", True))
    elif kind == "token_classification":
        def make(recs):
            return D.token_cls_examples(recs, tokenizer, task.labels, cutoff)
    else:
        from ftk.train.prompts import Prompter, load_template

        prompter = Prompter(tokenizer, load_template(tokenizer, model_cfg["template"]),
                            cutoff - method["num_virtual_tokens"], cfg["data"]["prompt_template"])

        def make(recs):
            return D.lm_examples(recs, prompter)

    train = make(read_records(cfg["data"]["train_file"]))
    evaluation = make(read_records(cfg["data"]["eval_file"])) if cfg["data"].get("eval_file") else None
    model = build_model(method, model_cfg["name_or_path"], tokenizer, labels,
                        trust_remote_code=model_cfg["trust_remote_code"])
    weights = method.get("class_weights") if isinstance(method.get("class_weights"), list) else None
    trainer = WeightedLossTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                                  data_collator=D.collator(kind, tokenizer),
                                  callbacks=[TrainerLogCallback(args.output_dir)], class_weights=weights,
                                  head=kind != "prompt_tuning")
    if trainer.is_world_process_zero():
        if hasattr(model, "print_trainable_parameters"):
            model.print_trainable_parameters()
        if args.deepspeed:
            from transformers.integrations import is_deepspeed_zero3_enabled

            print(f"[ftk-trainer] DeepSpeed config {args.deepspeed}; ZeRO-3 enabled: {is_deepspeed_zero3_enabled()}",
                  flush=True)
    trainer.train(resume_from_checkpoint=cfg.get("resume_from_checkpoint"))
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        saveable(tokenizer).save_pretrained(args.output_dir)  # as loaded (eval appends EOS itself)
        trainer.save_state()
        info = {"kind": kind, "finetuning_type": method["finetuning_type"], "labels": labels,
                "append_eos": method.get("append_eos", False),
                "base_model": model_cfg["name_or_path"], "num_virtual_tokens": method.get("num_virtual_tokens"),
                "class_weights": weights,
                "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        Path(args.output_dir, METHOD_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Ranks leave together: one that exits while another still talks through gloo can abort in C++
    teardown (`terminate called without an active exception`) after the model was saved."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
