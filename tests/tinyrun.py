"""A tiny training run for the tests: a short verse to learn, and a configuration that trains
it in about a second (the ``corpus`` fixture in conftest.py writes the verse to a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from numpylm.training.train import TrainConfig

VERSE = (
    "to be, or not to be: that is the question.\n"
    "whether 'tis nobler in the mind to suffer\n"
    "the slings and arrows of outrageous fortune,\n"
)
VOCAB = 300


def tiny_config(data: Path, out: Path, **changes: Any) -> TrainConfig:
    """A tiny model (2 layers, 32 channels, context 32) and a 12-step run; ``changes``
    override any field."""
    base: dict[str, Any] = dict(
        data=str(data),
        out=str(out),
        tokenizer=f"bpe:{VOCAB}",
        config="tiny",
        n_embd=32,
        n_ctx=32,
        steps=12,
        batch_size=4,
        lr=1e-2,
        warmup=2,
        eval_every=6,
        eval_batches=2,
        save_every=4,
    )
    return TrainConfig(**{**base, **changes})
