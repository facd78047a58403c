"""ftk: config-driven fine-tuning kit for LLM text classification, on top of LLaMA-Factory."""

__version__ = "0.1.0"

import contextlib as _contextlib
import os as _os


@_contextlib.contextmanager
def llamafactory_verbosity(level: str):
    """LLaMA-Factory imported at `level` unless the user chose one; the environment restored after.

    LLaMA-Factory reads LLAMAFACTORY_VERBOSITY once, when its first logger is made, so ftk's own
    process (validation, prompt fitting) stays quiet while the environment a trainer launched later
    inherits is the user's own (train.log then holds LLaMA-Factory's INFO output by default).
    """
    before = _os.environ.get("LLAMAFACTORY_VERBOSITY")
    if before is None:
        _os.environ["LLAMAFACTORY_VERBOSITY"] = level
    try:
        yield
    finally:
        if before is None:
            _os.environ.pop("LLAMAFACTORY_VERBOSITY", None)
