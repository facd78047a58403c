"""ftk: config-driven fine-tuning kit for LLM text classification, on top of LLaMA-Factory."""

__version__ = "0.1.0"

import os as _os

# The user's own LLaMA-Factory verbosity: ftk quiets LLaMA-Factory in its own process (validation,
# prompt fitting) but the trainer it launches logs as the user asked (INFO by default) to train.log.
USER_LLAMAFACTORY_VERBOSITY = _os.environ.get("LLAMAFACTORY_VERBOSITY")
