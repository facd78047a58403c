"""ftk: config-driven fine-tuning kit for LLM text classification, on top of LLaMA-Factory."""

__version__ = "0.1.0"
