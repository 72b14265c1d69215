"""The layers every model family is built from, each a small function over NumPy arrays, each
forward beside its backward.

Every forward's docstring opens with its formula, and its code is that formula. Shapes use the
names of Karpathy's llm.c:

- ``B`` batch size, ``T`` number of new tokens, ``L`` number of keys a query can see (the cache
  length plus ``T``), ``C`` channels (``n_embd``), ``H`` heads, ``D = C // H`` head size,
  ``V`` vocabulary size.

Every function keeps the dtype of its inputs: a float32 model stays float32 (no silent
promotion to float64), and a float64 model stays float64 for gradient checks. Python scalars
such as ``0.5`` do not change the dtype of an array under NumPy's promotion rules; NumPy scalars
such as ``np.sqrt(2.0)`` would, so constants here are plain Python floats.

One module per idea: ``embeddings`` (tokens, and positions: learned, or RoPE's rotations),
``dense`` (the linear layer), ``norms`` (LayerNorm, RMSNorm), ``activations`` (GELU, SiLU and
SwiGLU), ``self_attention`` (with its mask, and grouped-query attention), ``regularisation``
(dropout) and ``loss``. GPT-2 uses some, the Llama family others; the
ones they share (linear, attention, the loss) are written once. The Llama family's layers are
forward only for now: their backward passes come with training the family.
"""

from __future__ import annotations

from ..sampling.softmax import softmax  # attention's softmax, numpylm's one (sampling's)
from .activations import gelu, gelu_backward, gelu_fast, silu, swiglu
from .dense import linear, linear_backward
from .embeddings import embedding, embedding_backward, rope, rope_cos_sin
from .loss import cross_entropy
from .norms import LAYER_NORM_EPS, layer_norm, layer_norm_backward, layer_norm_fast, rms_norm
from .regularisation import apply_dropout, check_dropout, dropout, dropout_backward, dropout_mask
from .self_attention import (
    Attention,
    attention,
    attention_backward,
    causal_mask,
    grouped_query_attention,
    merge_heads,
    softmax_backward,
    split_heads,
)

__all__ = [
    "LAYER_NORM_EPS",
    "Attention",
    "apply_dropout",
    "attention",
    "attention_backward",
    "causal_mask",
    "check_dropout",
    "cross_entropy",
    "dropout",
    "dropout_backward",
    "dropout_mask",
    "embedding",
    "embedding_backward",
    "gelu",
    "gelu_backward",
    "gelu_fast",
    "grouped_query_attention",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_fast",
    "linear",
    "linear_backward",
    "merge_heads",
    "rms_norm",
    "rope",
    "rope_cos_sin",
    "silu",
    "softmax",
    "softmax_backward",
    "split_heads",
    "swiglu",
]
