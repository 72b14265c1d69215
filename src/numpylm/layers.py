"""The layers of GPT-2, each a small function over NumPy arrays.

Shapes use the names of Karpathy's llm.c:

- ``B`` batch size, ``T`` number of new tokens, ``L`` number of keys a query can see (the cache
  length plus ``T``), ``C`` channels (``n_embd``), ``H`` heads, ``D = C // H`` head size,
  ``V`` vocabulary size.

Every function keeps the dtype of its inputs: a float32 model stays float32 (no silent
promotion to float64), and a float64 model stays float64 for gradient checks. Python scalars
such as ``0.5`` do not change the dtype of an array under NumPy's promotion rules; NumPy scalars
such as ``np.sqrt(2.0)`` would, so constants here are plain Python floats.
"""

from __future__ import annotations

import math

import numpy as np

LAYER_NORM_EPS = 1e-5
"""GPT-2's LayerNorm epsilon (``layer_norm_epsilon`` in Hugging Face's ``GPT2Config``)."""

_GELU_C = math.sqrt(2.0 / math.pi)


def embedding(wte: np.ndarray, wpe: np.ndarray, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Token embedding plus position embedding.

    Args:
        wte: (V, C) token embedding table.
        wpe: (n_ctx, C) learned position embedding table.
        ids: (B, T) integer token ids.
        pos: (B, T) or (T,) integer positions.

    Returns:
        (B, T, C) array: ``wte[ids] + wpe[pos]``.
    """
    return wte[ids] + wpe[pos]  # (B, T, C)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalise each position's channels to mean 0 and variance 1, then scale and shift.

    Args:
        x: (..., C) input.
        w: (C,) gain.
        b: (C,) bias.

    Returns:
        (..., C): ``(x - mean) / sqrt(var + eps) * w + b``, statistics over the last axis.
    """
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)  # biased variance, as PyTorch uses
    rstd = 1.0 / np.sqrt(var + LAYER_NORM_EPS)
    return xc * rstd * w + b


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """An affine map ``x @ w + b``.

    GPT-2 stores its weights as (in, out) (OpenAI's ``Conv1D``), so no transpose is needed.

    Args:
        x: (..., C_in) input.
        w: (C_in, C_out) weight.
        b: (C_out,) bias.

    Returns:
        (..., C_out).
    """
    return x @ w + b


def gelu(x: np.ndarray) -> np.ndarray:
    """GPT-2's GELU, in the tanh approximation (``gelu_new`` in Hugging Face).

    ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``, elementwise.
    """
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + 0.044715 * x * x * x)))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax: subtracting the max leaves the result unchanged but keeps
    ``exp`` from overflowing, so logits like ``[1000, 1001]`` work."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, C) -> (B, H, T, D): give each head its own slice of the channels."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, H, T, D) -> (B, T, C): put the heads' outputs side by side again."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled dot-product attention for all heads at once.

    Each query scores every key it is allowed to see, the scores become weights by softmax,
    and the output is the weighted average of the values.

    Args:
        q: (B, H, T, D) queries of the new tokens.
        k: (B, H, L, D) keys of every token a query may look at (cached ones first).
        v: (B, H, L, D) values, aligned with ``k``.
        allowed: boolean array broadcastable to (B, H, T, L), True where query ``t`` may attend
            to key ``l`` (the causal mask, and padding); None when every key is allowed (one new
            token and no padding).

    Returns:
        ``(y, att)``: y (B, H, T, D) the attended values, att (B, H, T, L) the attention
        probabilities (rows sum to 1).
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (B, H, T, L)
    if allowed is not None:
        # The most negative finite number, not -inf: exp() of it is exactly 0 after the max is
        # subtracted, and a row that is masked everywhere (a padding token) stays finite.
        scores = np.where(allowed, scores, np.finfo(scores.dtype).min)
    att = softmax(scores)
    return att @ v, att  # (B, H, T, D), (B, H, T, L)


def causal_mask(T: int, L: int) -> np.ndarray:
    """(T, L) boolean mask: new token ``t`` (at absolute index ``L - T + t``) may see keys
    ``0 .. L - T + t``, never a later one."""
    return np.tri(T, L, k=L - T, dtype=bool)
