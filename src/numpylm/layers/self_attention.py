"""Masked multi-head self-attention: each token's query scores the keys it may see, and the
scores, through softmax, weight the values. Grouped-query attention (the Llama family) lets
several query heads share one key/value head.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..sampling.softmax import softmax
from .regularisation import apply_dropout, dropout_backward


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, C) -> (B, H, T, D): give each head its own slice of the channels."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, H, T, D) -> (B, T, C): put the heads' outputs side by side again."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def causal_mask(T: int, L: int) -> np.ndarray:
    """(T, L) boolean mask: new token ``t`` (at absolute index ``L - T + t``) may see keys
    ``0 .. L - T + t``, never a later one."""
    return np.tri(T, L, k=L - T, dtype=bool)


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    allowed: np.ndarray | None,
    *,
    drop: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``softmax(q @ k.T / sqrt(D), where allowed) @ v``: scaled dot-product attention, for
    all heads at once.

    Each query scores every key it is allowed to see, the scores become weights by softmax,
    and the output is the weighted average of the values.

    Args:
        q: (B, H, T, D) queries of the new tokens.
        k: (B, H, L, D) keys of every token a query may look at (cached ones first).
        v: (B, H, L, D) values, aligned with ``k``.
        allowed: boolean array broadcastable to (B, H, T, L), True where query ``t`` may attend
            to key ``l`` (the causal mask, and padding); None when every key is allowed (one new
            token and no padding).
        drop: for training with dropout, ``(keep, rate)``: the probabilities are dropped with
            ``keep``, a (B, H, T, L) boolean mask from ``dropout_mask``, before they weight the
            values (GPT-2's ``attn_pdrop``). None (the default) drops nothing.

    Returns:
        ``(y, att)``: y (B, H, T, D) the attended values, att (B, H, T, L) the attention
        probabilities (rows sum to 1), before any dropout.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = q @ k.swapaxes(-1, -2)  # (B, H, T, L)
    # In place, as the masking and the softmax: the largest arrays of a training step
    scores *= scale
    if allowed is not None:
        # The most negative finite number, not -inf: exp() of it is exactly 0 after the max is
        # subtracted, and a row that is masked everywhere (a padding token) stays finite.
        np.copyto(scores, np.finfo(scores.dtype).min, where=~allowed)
    # The scores are finite by construction, and a diverged run's NaN must reach the training
    # loop's check rather than stop here: no check of the rows.
    att = softmax(scores, out=scores, check=False)
    weights = att if drop is None else apply_dropout(att, *drop)  # a query forgets some keys
    return weights @ v, att  # (B, H, T, D), (B, H, T, L)


def attention_backward(
    dy: np.ndarray,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    att: np.ndarray,
    *,
    drop: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of ``attention``, for all heads at once.

    Args:
        dy: (B, H, T, D) gradient with respect to the attended values.
        q, k, v: the forward's (B, H, T, D), (B, H, L, D), (B, H, L, D) inputs.
        att: (B, H, T, L) the attention probabilities the forward returned (the mask is in
            them: masked entries are exactly 0, so no gradient reaches a hidden key).
        drop: the forward's ``(keep, rate)``, or None if it dropped nothing.

    Returns:
        ``(dq, dk, dv)`` with the shapes of ``q``, ``k`` and ``v``.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    weights = att if drop is None else apply_dropout(att, *drop)  # the forward's, again
    dv = weights.swapaxes(-1, -2) @ dy  # from "weights @ v": (B, H, L, D)
    datt = dy @ v.swapaxes(-1, -2)  # from "weights @ v": (B, H, T, L)
    if drop is not None:
        datt = dropout_backward(datt, *drop)  # from "weights = dropout(att)"
    dscores = softmax_backward(datt, att)  # from "softmax(scores)", before its "* scale"
    # from "scores = q @ k.T", then "* scale": applied to dq and dk, D wide, rather than to
    # dscores, L wide (the same numbers, one pass over a smaller array)
    dq = dscores @ k  # (B, H, T, D)
    dq *= scale
    dk = dscores.swapaxes(-1, -2) @ q  # (B, H, L, D)
    dk *= scale
    return dq, dk, dv


def softmax_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Backward of ``softmax`` (``numpylm.sampling.softmax``) over the last axis, from its
    output ``out``.

    ``d out_j / d x_i = out_j * (delta_ij - out_i)``, so
    ``dx_i = out_i * (dout_i - sum_j dout_j * out_j)``. An entry the forward masked out has
    ``out = 0`` exactly and so gets no gradient.
    """
    dot = np.einsum("...l,...l->...", dout, out)[..., None]  # sum_j dout_j out_j, per row
    dx = dout - dot
    dx *= out  # in place: dx has the size of the attention probabilities, (B, H, T, L)
    return dx


Attention = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
"""A backend's ``attention(q, k, v, allowed)`` (``numpylm.models.backends``)."""


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
