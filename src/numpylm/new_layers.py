"""The layers the Llama family adds to GPT-2's, forward only: RMSNorm, rotary position
embeddings (RoPE), the SwiGLU MLP's activation, and grouped-query attention.

Each function's docstring opens with its formula, and its code is that formula. Shapes use the
names of ``numpylm.layers``, plus ``H_kv``, the number of key/value heads, and ``G = H // H_kv``,
the query heads that share each of them. Like ``layers``, every function keeps the dtype of its
inputs (constants are Python floats), so a float32 model stays float32.

(The backward passes come with training the family, in a later issue.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x**2) + eps) * w``, the mean over the last axis: scale each position's
    channels to a root mean square of 1, then by a learned gain.

    LayerNorm (``layers.layer_norm``) without its two other steps: no mean is subtracted and no
    bias added. It costs less and trains as well, which is why the Llama family uses it.

    Args:
        x: (..., C) input.
        w: (C,) gain.
        eps: added to the mean square so a zero vector does not divide by zero (1e-5 or 1e-6,
            from the model's config).

    Returns:
        (..., C).
    """
    ms = (x * x).mean(axis=-1, keepdims=True)  # (..., 1) the mean square
    return x / np.sqrt(ms + eps) * w


def rope_cos_sin(
    pos: np.ndarray, head_size: int, theta: float, dtype: np.dtype | type
) -> tuple[np.ndarray, np.ndarray]:
    """``cos(pos * f_i)`` and ``sin(pos * f_i)`` with ``f_i = theta ** (-2i / D)``,
    ``i = 0 .. D/2 - 1``: the angles by which RoPE turns each pair of channels.

    Pair ``i`` turns by ``f_i`` radians per position: the first pairs quickly (``f_0 = 1``), the
    last slowly (``theta`` sets how slowly: 10,000 in the first Llama, 1e5 or 1e6 in models that
    read longer texts).

    Args:
        pos: (T,) positions shared by the batch, or (B, T) per sequence (a padded batch).
        head_size: ``D``, the channels of one head (even).
        theta: the RoPE base (``rope_theta``).
        dtype: the model's dtype, which the tables are returned in.

    Returns:
        ``(cos, sin)``, each (T, D/2), or (B, 1, T, D/2) for (B, T) positions: shaped to
        broadcast against (B, H, T, D/2) halves of the queries and keys.
    """
    # The angles reach thousands of radians in a long context; float32 would keep only about
    # 1e-4 rad of them, so they are computed in float64 and the tables rounded once, at the end.
    freq = theta ** (-np.arange(0, head_size, 2, dtype=np.float64) / head_size)  # (D/2,)
    angle = np.asarray(pos, dtype=np.float64)[..., None] * freq  # (..., T, D/2)
    if angle.ndim == 3:
        angle = angle[:, None]  # (B, 1, T, D/2): the same angles for every head
    return np.cos(angle).astype(dtype), np.sin(angle).astype(dtype)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """``[x1 * cos - x2 * sin, x2 * cos + x1 * sin]`` with ``x1, x2`` the two halves of each
    head's channels: rotary position embedding, each pair ``(x1[i], x2[i])`` turned by the
    angle ``pos * f_i`` (``rope_cos_sin``).

    Applied to the queries and keys (not the values), it makes the score ``q . k`` of a query at
    position ``m`` and a key at ``n`` depend on their positions only through ``m - n``: turning
    both by their own angles leaves the angle between them. Pairing channel ``i`` with channel
    ``i + D/2`` (rather than ``2i`` with ``2i + 1``) is Hugging Face's layout, which numpylm
    uses for every file (``models.llama.weights`` converts llama.cpp's).

    Args:
        x: (B, H, T, D) queries or keys.
        cos, sin: (T, D/2) or (B, 1, T, D/2) tables from ``rope_cos_sin``.

    Returns:
        (B, H, T, D), rotated.
    """
    x1, x2 = np.split(x, 2, axis=-1)  # 2 x (B, H, T, D/2)
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)``, elementwise, with ``sigmoid(x) = 1 / (1 + exp(-x))``: the "SiLU" or
    "swish", a smooth ReLU like GELU.

    Computed as ``sigmoid(x) = 0.5 * (1 + tanh(x / 2))``, the same function, because
    ``exp(-x)`` overflows float32 for ``x < -88`` and ``tanh`` never does.
    """
    return x * (0.5 * (1.0 + np.tanh(0.5 * x)))


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """``silu(gate) * up``, elementwise: the SwiGLU MLP's middle.

    GPT-2's MLP bends one projection, ``gelu(x @ W1)``. SwiGLU makes two, and one gates the
    other: ``silu(x @ W_gate) * (x @ W_up)``, then ``@ W_down``. For the same number of
    parameters (its hidden width is about 2/3 of 4C) it trains better.

    Args:
        gate: (B, T, F) the gate projection, ``x @ W_gate``.
        up: (B, T, F) the up projection, ``x @ W_up``.

    Returns:
        (B, T, F).
    """
    return silu(gate) * up


Attention = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
"""A backend's ``attention(q, k, v, allowed)`` (``numpylm.backends``)."""


def grouped_query_attention(
    attention: Attention, q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray | None
) -> np.ndarray:
    """``attention(q_h, k_{h // G}, v_{h // G})`` for every query head ``h``: grouped-query
    attention, where each key/value head serves ``G = H // H_kv`` query heads.

    The KV cache then stores ``H_kv`` heads instead of ``H`` (SmolLM2: 3 instead of 9, a third of
    the memory). Query head ``h`` reads key/value head ``h // G``: heads ``0 .. G-1`` share the
    first, as Hugging Face's ``repeat_kv`` lays them out.

    No key or value is copied: the G query heads of a group become one axis, and the group's
    keys and values a size-1 axis that matrix multiplication broadcasts against it.

    Args:
        attention: the backend's attention, (B', G, T, D) queries against (B', 1, L, D) keys and
            values here (``layers.attention``'s arguments, broadcasting over the leading axes).
        q: (B, H, T, D) queries.
        k: (B, H_kv, L, D) keys.
        v: (B, H_kv, L, D) values.
        allowed: the attention mask, broadcastable to (B, H, T, L): (T, L), (B, 1, T, L) or None.

    Returns:
        (B, H, T, D) attended values.
    """
    B, H, T, D = q.shape
    H_kv, L = k.shape[1], k.shape[2]
    G = H // H_kv
    qg = q.reshape(B * H_kv, G, T, D)  # query heads grouped by the key/value head they read
    kg, vg = k.reshape(B * H_kv, 1, L, D), v.reshape(B * H_kv, 1, L, D)  # views, no copies
    if allowed is not None and allowed.ndim == 4:  # (B, 1, T, L): one mask per sequence
        allowed = np.repeat(allowed, H_kv, axis=0)  # (B * H_kv, 1, T, L), booleans only
    return attention(qg, kg, vg, allowed).reshape(B, H, T, D)
