"""numpylm: a GPT-2 language model in plain NumPy.

The story, one folder per idea: ``tokens`` (text -> tokens: ``tokenizer``, ``bpe``),
``layers`` and ``models`` (the transformer: ``models/gpt2/model.py``, its training pass
``backward.py``), ``sampling`` and ``generation`` (one token at a time: ``generation/loop.py``),
``training`` (``train``, ``optim``, ``data``; ``finetune`` teaches a trained model to answer,
``align`` which of two answers is the better one).

Beside the story, the engineering a reader can skip: ``models``' ``backends`` and ``parallel``
(the same forward pass spread over the cores) and ``padding``; ``generation``'s ``context``,
``batching``, ``streaming`` and ``tracing``; ``training.runs`` (checkpoints and resuming);
``io`` (``checkpoint``, ``formats``, ``loading``: files, Hugging Face's format, the built-in
models); ``checks`` (argument checks) and ``viz`` (pictures).
"""

from __future__ import annotations

import importlib

from . import _deprecated

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (see _HOMES)

# The public names, each with the module it lives in. They are imported when first used
# (``__getattr__`` below), not when the package is: ``numpylm`` on the command line starts by
# importing ``numpylm.cli``, and must be able to take Ctrl-C itself (exit 130, no traceback)
# from its first instant, not only once all of NumPy and every module here have been read.
_HOMES = {
    "GPT": "models.gpt2.model",
    "AdamW": "training.optim",
    "AlignConfig": "training.align",
    "CheckpointError": "io.checkpoint",
    "FinetuneConfig": "training.finetune",
    "GPTConfig": "models.gpt2.model",
    "KVCache": "models.cache",
    "Sampler": "sampling",
    "Step": "generation.streaming",
    "Tokenizer": "tokens.tokenizer",
    "Trace": "generation.tracing",
    "TrainConfig": "training.train",
    "complete": "generation.streaming",
    "complete_batch": "generation.streaming",
    "evaluate": "training.train",
    "evaluate_sft": "training.finetune",
    "from_pretrained": "io.loading",
    "generate": "generation.loop",
    "generate_batch": "generation.batching",
    "greedy": "sampling",
    "load": "io.loading",
    "min_p": "sampling",
    "set_threads": "models.parallel",
    "softmax": "sampling",
    "stream": "generation.streaming",
    "temperature": "sampling",
    "top_k": "sampling",
    "top_p": "sampling",
    "trace": "generation.tracing",
    "train_bpe": "tokens.bpe",
}

__all__ = list(_HOMES)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``numpylm.GPT`` and the other public names: imported from their module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'numpylm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # what type checkers and editors see: the same names, imported eagerly
    from typing import Any

    from .generation.batching import generate_batch  # noqa: F401
    from .generation.loop import generate  # noqa: F401
    from .generation.streaming import Step, complete, complete_batch, stream  # noqa: F401
    from .generation.tracing import Trace, trace  # noqa: F401
    from .io.checkpoint import CheckpointError  # noqa: F401
    from .io.loading import from_pretrained, load  # noqa: F401
    from .models.cache import KVCache  # noqa: F401
    from .models.gpt2.model import GPT, GPTConfig  # noqa: F401
    from .models.parallel import set_threads  # noqa: F401
    from .sampling import Sampler, greedy, min_p, softmax, temperature, top_k, top_p  # noqa: F401
    from .tokens.bpe import train_bpe  # noqa: F401
    from .tokens.tokenizer import Tokenizer  # noqa: F401
    from .training.align import AlignConfig  # noqa: F401
    from .training.finetune import FinetuneConfig, evaluate_sft  # noqa: F401
    from .training.optim import AdamW  # noqa: F401
    from .training.train import TrainConfig, evaluate  # noqa: F401

_deprecated.install()
