"""One call to get a model and its tokenizer: ``numpylm.load``, and the built-in models."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..models.gpt2.model import GPT
from ..tokens.tokenizer import MERGES_FILE, VOCAB_FILE, Tokenizer
from ..training.data import TOKENIZER_RECORD, tokenizer_fingerprint
from . import checkpoint

BUILTIN_MODELS = {
    "shakespeare": "a small GPT-2 that numpylm trained on Tiny Shakespeare (the default)",
    "chat": "the Shakespeare model, fine-tuned by numpylm to answer simple questions and stop",
}
"""The models that ship inside the package, by name: each a folder of ``builtin/`` with its
``MODEL_CARD.md``. They need no network, so ``numpylm generate "ROMEO:"`` and
``numpylm generate --model chat "Who was the first president?"`` work on a fresh machine."""

BUILTIN_ROOT = Path(__file__).parents[1] / "builtin"
BUILTIN_DIR = BUILTIN_ROOT / "shakespeare"
"""The default built-in model's folder."""


def builtin_models() -> dict[str, str]:
    """The built-in models' names, each with a line saying what it is."""
    return dict(BUILTIN_MODELS)


def model_dir(name_or_path: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    """Where a model named by the user is: None is the default built-in model; a built-in
    name (``"chat"``) comes before a folder or Hub id of the same name; anything else is
    returned as it is (``checkpoint.resolve`` makes it a folder)."""
    name = "shakespeare" if name_or_path is None else name_or_path
    if isinstance(name, str) and name in BUILTIN_MODELS:
        folder = BUILTIN_ROOT / name
        if not (folder / checkpoint.WEIGHTS_FILE).is_file():
            raise checkpoint.CheckpointError(
                f"the built-in model {name!r} is missing from {folder}; reinstall numpylm, or "
                "pass a model directory or Hub id"
            )
        return folder
    return name


def load(name_or_path: str | os.PathLike[str] | None = None) -> tuple[GPT, Tokenizer]:
    """Load a model and the tokenizer it was trained with.

    Args:
        name_or_path: the name of a built-in model (``builtin_models()``: ``"shakespeare"``,
            ``"chat"``), a model directory, or a Hugging Face Hub id (see
            ``GPT.from_pretrained``); None for the built-in Shakespeare model. Built-in names
            come first.

    The tokenizer comes from the same place (``vocab.json`` + ``merges.txt``); a directory
    with neither gets GPT-2's tokenizer. A directory with one of them, or with something
    other than a file under either name, is an error that says so (GPT-2's tokenizer would
    be the wrong one).
    """
    directory = checkpoint.resolve(model_dir(name_or_path))
    model = GPT.from_pretrained(directory)
    if any(os.path.lexists(directory / name) for name in (VOCAB_FILE, MERGES_FILE)):
        tokenizer = Tokenizer.from_pretrained(directory)
    else:
        tokenizer = Tokenizer.gpt2()
    if tokenizer.n_vocab > model.config.vocab_size:
        raise checkpoint.CheckpointError(
            f"{directory}: the tokenizer has {tokenizer.n_vocab} tokens but the model only "
            f"{model.config.vocab_size}; they do not belong together"
        )
    recorded = checkpoint.read_json(directory / checkpoint.CONFIG_FILE).get(TOKENIZER_RECORD)
    if recorded is not None and recorded != tokenizer_fingerprint(tokenizer):
        where = f"{VOCAB_FILE} + {MERGES_FILE}" if (directory / VOCAB_FILE).is_file() else "GPT-2's"
        warnings.warn(
            f"{directory}: the tokenizer ({where}, fingerprint "
            f"{tokenizer_fingerprint(tokenizer)[:12]}) is not the one the model was trained with "
            f"(fingerprint {str(recorded)[:12]} in config.json): its text in and out will not "
            "mean what the model learned. Put the run's own tokenizer files beside the model",
            TokenizerMismatchWarning,
            stacklevel=2,
        )
    return model, tokenizer


class TokenizerMismatchWarning(UserWarning):
    """A model directory's tokenizer files are not the ones its model was trained with."""
