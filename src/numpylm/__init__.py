"""numpylm: a GPT-2 language model in plain NumPy.

The story, one module per idea: ``tokenizer`` and ``bpe`` (text -> tokens), ``layers`` and
``model`` (the transformer, its attention, its KV cache, its gradient), ``sampling`` and
``generate`` (one token at a time), ``train`` and ``optim`` (learning from text), ``finetune``
(teaching a trained model to answer), ``checkpoint`` and ``loading`` (weights on disk and the
built-in model), ``viz`` (pictures); ``parallel`` spreads a prompt's work over the cores.
"""

from .bpe import train_bpe
from .checkpoint import CheckpointError
from .finetune import FinetuneConfig, evaluate_sft
from .generate import Step, complete, complete_batch, generate, generate_batch, stream
from .loading import load
from .model import GPT, GPTConfig, KVCache
from .optim import AdamW
from .parallel import set_threads
from .sampling import Sampler, greedy, min_p, softmax, temperature, top_k, top_p
from .tokenizer import Tokenizer
from .trace import Trace, trace
from .train import TrainConfig, evaluate

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
