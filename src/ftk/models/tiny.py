"""`model.tiny`: the shape of a tiny random-init LLaMA that ftk builds when the recipe's model folder is
missing (CPU twins, tests, `ftk tiny-model`). Checked here, before a tokenizer is trained: a head count
that does not divide the width was a traceback from the model class."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TinyModelSpec(BaseModel):
    """Build a tiny random-init LLaMA at `model.name_or_path` when it is missing (CPU twins, tests)."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(128, ge=8, le=8192)
    layers: int = Field(2, ge=1, le=64)
    heads: int = Field(4, ge=1, le=256)
    kv_heads: int = Field(2, ge=1, le=256)
    vocab_size: int = Field(4096, ge=300, le=262_144)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _shape(self) -> TinyModelSpec:  # here, not as a traceback from the model class after the tokenizer
        h, n, kv = self.hidden_size, self.heads, self.kv_heads
        why = (h % n and f"heads: {n} does not divide hidden_size {h}") or ((h // n) % 2 and f"heads: hidden_size / "
               f"heads = {h // n} is odd (rotary embeddings need an even head dimension)") or (
               n % kv and f"kv_heads: {kv} does not divide heads {n} (grouped-query attention)")
        if why:
            raise ValueError(why)
        return self
