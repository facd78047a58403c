"""ftk's own trainer for the methods LLaMA-Factory lacks, on transformers' Trainer and PEFT:
a sequence-classification head (LoRA SEQ_CLS or full), a token-classification head (LoRA
TOKEN_CLS or full) and prompt tuning of a causal LM. `python -m ftk.train.hf.entry trainer.yaml`
is launched exactly like LLaMA-Factory (one process, torchrun, DeepSpeed, SLURM)."""
