"""Stage 1, data: task definitions (YAML), raw-format readers, cleaning, prepare -> LLaMA-Factory
files + dataset_info.json + manifest.json, synthetic data. Imports nothing from train or eval."""
