"""Top-k: keep only the ``k`` most likely tokens.

The long tail of a language model's distribution holds thousands of tokens that are each
unlikely but together likely enough to be drawn now and then, and one bad token can derail the
rest of the text. Top-k cuts the tail at a fixed size: the ``k`` highest logits survive, the rest
get ``-inf``, and the softmax renormalises over the survivors:
``p'_i = p_i / sum_{j in top k} p_j``.
"""

from __future__ import annotations

import numpy as np

from ..checks import whole_number


def check_top_k(k: object) -> int:
    """``k`` as an int, or an error saying top_k must be a whole number >= 1."""
    return whole_number("top_k", k, 1)


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep exactly the ``k`` largest logits of each row (ties broken by lower token id).

    ``k`` larger than the vocabulary keeps everything. The work is a partial sort
    (``np.partition``, O(V)) to find the k-th largest value, not a full sort.

    Args:
        logits: (..., V) scores.
        k: how many tokens to keep, >= 1.

    Returns:
        (..., V) logits of the same dtype, ``-inf`` outside the top k.
    """
    return apply_top_k(logits, check_top_k(k))


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """``top_k`` for a ``k`` already checked by ``check_top_k`` (the ``Sampler`` checks its
    values once, when it is made, not at every token)."""
    V = logits.shape[-1]
    if k >= V:
        return logits
    kth = np.partition(logits, V - k, axis=-1)[..., V - k : V - k + 1]  # (..., 1) k-th largest
    above = logits > kth
    tied = logits == kth
    # Several tokens may share the k-th value: keep the lowest ids among them, just enough of
    # them to make k in all.
    room = k - above.sum(axis=-1, keepdims=True)  # (..., 1)
    keep = above | (tied & (np.cumsum(tied, axis=-1) <= room))
    return np.where(keep, logits, -np.inf)
