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

from . import _deprecated
from .generation.batching import generate_batch
from .generation.loop import generate
from .generation.streaming import Step, complete, complete_batch, stream
from .generation.tracing import Trace, trace
from .io.checkpoint import CheckpointError
from .io.loading import load
from .models.gpt2.model import GPT, GPTConfig, KVCache
from .models.parallel import set_threads
from .sampling import Sampler, greedy, min_p, softmax, temperature, top_k, top_p
from .tokens.bpe import train_bpe
from .tokens.tokenizer import Tokenizer
from .training.finetune import FinetuneConfig, evaluate_sft
from .training.optim import AdamW
from .training.train import TrainConfig, evaluate

_deprecated.install()

__all__ = [
    "GPT",
    "AdamW",
    "CheckpointError",
    "FinetuneConfig",
    "GPTConfig",
    "KVCache",
    "Sampler",
    "Step",
    "Tokenizer",
    "Trace",
    "TrainConfig",
    "complete",
    "complete_batch",
    "evaluate",
    "evaluate_sft",
    "generate",
    "generate_batch",
    "greedy",
    "load",
    "min_p",
    "set_threads",
    "softmax",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "trace",
    "train_bpe",
]
__version__ = "0.1.0"
