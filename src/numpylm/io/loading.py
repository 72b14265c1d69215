"""One call to get a model and its tokenizer: ``numpylm.load`` (``numpylm.from_pretrained``:
the model alone), and the built-in models.

A model is named by what the user has: a built-in name (``"shakespeare"``, ``"chat"``), a
downloaded one (``"smollm2"``: ``numpylm download smollm2`` fetched it into numpylm's cache), a
``.gguf`` file, a Hugging Face model directory, or a Hub id. A directory's ``config.json``
says which family it is (``model_type``): ``gpt2`` is ``GPT``, ``llama`` and ``qwen2`` are
``Llama``; a GGUF file is always the Llama family.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import download
from ..models.family import LanguageModel
from ..models.gpt2.model import GPT
from ..models.llama import weights as llama_weights
from ..models.llama.model import Llama, LlamaConfig, param_shapes
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


GPT2_TYPE = "gpt2"
"""The ``model_type`` of GPT-2's ``config.json``; ``llama_weights.ARCHITECTURES`` has the
Llama family's."""

HF_TOKENIZER_FILE = "tokenizer.json"


def locate(name_or_path: str | os.PathLike[str] | None) -> Path:
    """Where the model named by the user is, as a local path: a built-in model's folder, a
    downloaded model's file (``"smollm2"``; a one-line error with the command that fetches it
    if it is not there yet), a ``.gguf`` file, or a model directory (a Hub id is downloaded by
    ``checkpoint.resolve``). Built-in and downloadable names come before folders of the same
    name."""
    if isinstance(name_or_path, str) and name_or_path in download.DOWNLOADS:
        return download.find(name_or_path)
    where = model_dir(name_or_path)
    if is_gguf(where):
        path = Path(where).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {str(path)!r}: check the path")
        return path
    return checkpoint.resolve(where)


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """A ``.gguf`` name, or a file that starts as GGUF files do (``GGUF``)."""
    path = Path(path).expanduser()
    if path.suffix == llama_weights.GGUF_SUFFIX:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:  # a folder, a Hub id, nothing: not a GGUF file
        return False


def model_type(directory: Path) -> str | None:
    """The ``model_type`` of a model directory's ``config.json`` (None without the key, or
    without the file: GPT's loader then says what is wrong), refusing the families numpylm does
    not compute by naming the key."""
    config = directory / checkpoint.CONFIG_FILE
    if not config.is_file():
        return None
    kind = checkpoint.read_json(config).get("model_type")
    known = (GPT2_TYPE, *llama_weights.ARCHITECTURES)
    if kind is not None and kind not in known:
        raise checkpoint.CheckpointError(
            f"{config}: model_type is {kind!r}; numpylm reads {', '.join(map(repr, known))} "
            "(GPT-2, and the Llama family: Llama, SmolLM2, Qwen2)"
        )
    return None if kind is None else str(kind)


def from_pretrained(
    name_or_path: str | os.PathLike[str] | None = None, dtype: Any = np.float32
) -> LanguageModel:
    """Load a model, of either family, without its tokenizer.

    Args:
        name_or_path: what ``load`` takes: a built-in name, ``"smollm2"``, a ``.gguf`` file, a
            Hugging Face model directory (``model_type`` ``gpt2``, ``llama`` or ``qwen2``) or
            a Hub id; None for the built-in Shakespeare model.
        dtype: float32 (the default) or float64.

    Returns:
        A ``GPT`` for GPT-2, a ``Llama`` for the Llama family (and every GGUF file).
    """
    source = locate(name_or_path)
    if source.is_file():
        return Llama.from_pretrained(source, dtype=dtype)
    if model_type(source) in llama_weights.ARCHITECTURES:
        return Llama.from_pretrained(source, dtype=dtype)
    return GPT.from_pretrained(source, dtype=dtype)


def load(name_or_path: str | os.PathLike[str] | None = None) -> tuple[LanguageModel, Tokenizer]:
    """Load a model and the tokenizer it was trained with.

    Args:
        name_or_path: the name of a built-in model (``builtin_models()``: ``"shakespeare"``,
            ``"chat"``), a downloaded one (``"smollm2"``, after ``numpylm download smollm2``),
            a ``.gguf`` file, a model directory, or a Hugging Face Hub id (see
            ``GPT.from_pretrained``); None for the built-in Shakespeare model. Built-in names
            come first.

    A GGUF file carries its tokenizer (``tokenizer_from_gguf``), with its chat template and
    end-of-turn tokens. A Llama-family directory needs ``tokenizer.json``
    (``tokenizer_from_hf``, which also reads ``tokenizer_config.json``'s chat template).
    A GPT-2 directory's tokenizer is ``vocab.json`` + ``merges.txt``; one with neither gets
    GPT-2's tokenizer. A directory with one of them, or with something other than a file under
    either name, is an error that says so (GPT-2's tokenizer would be the wrong one).
    """
    source = locate(name_or_path)
    if source.is_file():
        model, tokenizer = _load_gguf(source)
    elif model_type(source) in llama_weights.ARCHITECTURES:
        model = Llama.from_pretrained(source)
        tokenizer = _hf_tokenizer(source)
    else:
        return _load_gpt(source)
    _check_vocab(source, tokenizer, model.config.vocab_size)
    return model, tokenizer


def _load_gguf(path: Path) -> tuple[Llama, Tokenizer]:
    """A GGUF file's model and tokenizer, from one read of its header (it takes seconds)."""
    from ..tokens.pretrained import tokenizer_from_gguf

    reader = llama_weights.open_gguf(path)
    config, params = llama_weights.read(path, LlamaConfig, param_shapes, reader=reader)
    return Llama(config, params=params), tokenizer_from_gguf(reader)


def _hf_tokenizer(directory: Path) -> Tokenizer:
    from ..tokens.pretrained import tokenizer_from_hf

    if not (directory / HF_TOKENIZER_FILE).is_file():
        raise FileNotFoundError(
            f"{directory} has no {HF_TOKENIZER_FILE}: a Llama-family model needs its own "
            "tokenizer beside it (Llama.from_pretrained loads the model without one)"
        )
    return tokenizer_from_hf(directory)


def _check_vocab(directory: Path, tokenizer: Tokenizer, vocab_size: int) -> None:
    if tokenizer.n_vocab > vocab_size:
        raise checkpoint.CheckpointError(
            f"{directory}: the tokenizer has {tokenizer.n_vocab} tokens but the model only "
            f"{vocab_size}; they do not belong together"
        )


def _load_gpt(directory: Path) -> tuple[GPT, Tokenizer]:
    """A GPT-2 directory's model and tokenizer (see ``load``)."""
    model = GPT.from_pretrained(directory)
    if any(os.path.lexists(directory / name) for name in (VOCAB_FILE, MERGES_FILE)):
        tokenizer = Tokenizer.from_pretrained(directory)
    else:
        tokenizer = Tokenizer.gpt2()
    _check_vocab(directory, tokenizer, model.config.vocab_size)
    recorded = checkpoint.read_json(directory / checkpoint.CONFIG_FILE).get(TOKENIZER_RECORD)
    if recorded is not None and recorded != tokenizer_fingerprint(tokenizer):
        where = f"{VOCAB_FILE} + {MERGES_FILE}" if (directory / VOCAB_FILE).is_file() else "GPT-2's"
        warnings.warn(
            f"{directory}: the tokenizer ({where}, fingerprint "
            f"{tokenizer_fingerprint(tokenizer)[:12]}) is not the one the model was trained with "
            f"(fingerprint {str(recorded)[:12]} in config.json): its text in and out will not "
            "mean what the model learned. Put the run's own tokenizer files beside the model",
            TokenizerMismatchWarning,
            stacklevel=3,
        )
    return model, tokenizer


class TokenizerMismatchWarning(UserWarning):
    """A model directory's tokenizer files are not the ones its model was trained with."""
