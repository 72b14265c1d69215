"""numpylm: a GPT-2 language model in plain NumPy.

The story, one module per idea: ``tokenizer`` and ``bpe`` (text -> tokens), ``layers`` and
``model`` (the transformer, its attention, its KV cache), ``sampling`` and ``generation``
(one token at a time), ``backprop``, ``optim`` and ``train`` (learning from text),
``finetune`` (teaching a trained model to answer).

Beside the story, the engineering a reader can skip: ``backends`` and ``parallel`` (the same
forward pass spread over the cores), ``padding`` and ``context`` (batches of prompts, the KV
cache between steps, the context window), ``batching``, ``streaming`` and ``tracing``
(several prompts, text as it is written, the step-by-step table), ``runs`` (checkpoints and
resuming), ``checkpoint`` and ``formats`` (files and Hugging Face's format), ``loading`` (the
built-in model), ``checks`` (argument checks) and ``viz`` (pictures).
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
    "GPT": "model",
    "AdamW": "optim",
    "CheckpointError": "checkpoint",
    "FinetuneConfig": "finetune",
    "GPTConfig": "model",
    "KVCache": "model",
    "Sampler": "sampling",
    "Step": "streaming",
    "Tokenizer": "tokenizer",
    "Trace": "tracing",
    "TrainConfig": "train",
    "complete": "streaming",
    "complete_batch": "streaming",
    "evaluate": "train",
    "evaluate_sft": "finetune",
    "generate": "generation",
    "generate_batch": "batching",
    "greedy": "sampling",
    "load": "loading",
    "min_p": "sampling",
    "set_threads": "parallel",
    "softmax": "sampling",
    "stream": "streaming",
    "temperature": "sampling",
    "top_k": "sampling",
    "top_p": "sampling",
    "trace": "tracing",
    "train_bpe": "bpe",
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

    from .batching import generate_batch  # noqa: F401
    from .bpe import train_bpe  # noqa: F401
    from .checkpoint import CheckpointError  # noqa: F401
    from .finetune import FinetuneConfig, evaluate_sft  # noqa: F401
    from .generation import generate  # noqa: F401
    from .loading import load  # noqa: F401
    from .model import GPT, GPTConfig, KVCache  # noqa: F401
    from .optim import AdamW  # noqa: F401
    from .parallel import set_threads  # noqa: F401
    from .sampling import Sampler, greedy, min_p, softmax, temperature, top_k, top_p  # noqa: F401
    from .streaming import Step, complete, complete_batch, stream  # noqa: F401
    from .tokenizer import Tokenizer  # noqa: F401
    from .tracing import Trace, trace  # noqa: F401
    from .train import TrainConfig, evaluate  # noqa: F401

_deprecated.install()
