"""numpylm: a GPT-2 language model in plain NumPy.

The story, one module per idea: ``tokenizer`` (text -> tokens), ``layers`` and ``model`` (the
transformer, its attention and its KV cache), and ``checkpoint`` (loading and saving weights).
"""

from .bpe import train_bpe
from .checkpoint import CheckpointError
from .model import GPT, GPTConfig, KVCache
from .optim import AdamW
from .tokenizer import Tokenizer

__all__ = ["GPT", "AdamW", "CheckpointError", "GPTConfig", "KVCache", "Tokenizer", "train_bpe"]
__version__ = "0.1.0"
