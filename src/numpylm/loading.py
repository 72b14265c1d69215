"""One call to get a model and its tokenizer: ``numpylm.load``, and the built-in model."""

from __future__ import annotations

import os
from pathlib import Path

from . import checkpoint
from .model import GPT
from .tokenizer import MERGES_FILE, VOCAB_FILE, Tokenizer

BUILTIN_DIR = Path(__file__).parent / "builtin" / "shakespeare"
"""The model that ships inside the package: a small GPT-2 trained by numpylm on Tiny
Shakespeare with its own BPE vocabulary (see ``MODEL_CARD.md`` in that folder). It needs no
network, so ``numpylm generate "ROMEO:"`` works on a fresh machine."""


def load(name_or_path: str | os.PathLike[str] | None = None) -> tuple[GPT, Tokenizer]:
    """Load a model and the tokenizer it was trained with.

    Args:
        name_or_path: a model directory or a Hugging Face Hub id (see ``GPT.from_pretrained``);
            None for the built-in Shakespeare model.

    The tokenizer comes from the same place (``vocab.json`` + ``merges.txt``); a directory
    without them gets GPT-2's tokenizer.
    """
    if name_or_path is None:
        if not (BUILTIN_DIR / checkpoint.WEIGHTS_FILE).is_file():
            raise checkpoint.CheckpointError(
                f"the built-in model is missing from {BUILTIN_DIR}; reinstall numpylm, or pass "
                "a model directory or Hub id"
            )
        name_or_path = BUILTIN_DIR
    directory = checkpoint.resolve(name_or_path)
    model = GPT.from_pretrained(directory)
    if (directory / VOCAB_FILE).is_file() and (directory / MERGES_FILE).is_file():
        tokenizer = Tokenizer.from_pretrained(directory)
    else:
        tokenizer = Tokenizer.gpt2()
    if tokenizer.n_vocab > model.config.vocab_size:
        raise checkpoint.CheckpointError(
            f"{directory}: the tokenizer has {tokenizer.n_vocab} tokens but the model only "
            f"{model.config.vocab_size}; they do not belong together"
        )
    return model, tokenizer
