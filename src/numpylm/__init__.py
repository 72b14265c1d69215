"""numpylm: a GPT-2 language model in plain NumPy.

The story, one folder per idea: ``tokens`` (text -> tokens: ``tokenizer``, ``bpe``),
``layers`` and ``models`` (the transformer: ``models/gpt2/model.py``, its training pass
``backward.py``), ``sampling`` and ``generation`` (one token at a time: ``generation/loop.py``),
``training`` (``train``, ``optim``, ``data``; ``finetune`` teaches a trained model to answer).

Beside the story, the engineering a reader can skip: ``models``' ``backends`` and ``parallel``
(the same forward pass spread over the cores) and ``padding``; ``generation``'s ``context``,
``batching``, ``streaming`` and ``tracing``; ``training.runs`` (checkpoints and resuming);
``io`` (``checkpoint``, ``formats``, ``loading``: files, Hugging Face's format, the built-in
models); ``checks`` (argument checks) and ``viz`` (pictures).
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
