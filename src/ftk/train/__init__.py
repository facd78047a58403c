"""Stage 2, train: recipe -> run directory -> LLaMA-Factory YAML / DeepSpeed JSON -> launch argv
(torchrun, SLURM) -> manifest; export. May import data, never eval."""
