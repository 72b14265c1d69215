"""One call to get a model and its tokenizer: ``numpylm.load``."""

from __future__ import annotations

import os

from . import checkpoint
from .model import GPT
from .tokenizer import MERGES_FILE, VOCAB_FILE, Tokenizer


def load(name_or_path: str | os.PathLike[str]) -> tuple[GPT, Tokenizer]:
    """Load a model and the tokenizer it was trained with.

    ``name_or_path`` is a model directory or a Hugging Face Hub id (see
    ``GPT.from_pretrained``). The tokenizer comes from the same place (``vocab.json`` +
    ``merges.txt``); a directory without them gets GPT-2's tokenizer.
    """
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
