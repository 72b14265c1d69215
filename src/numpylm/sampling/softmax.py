"""Softmax: scores (logits) -> probabilities.

``p_i = exp(z_i) / sum_j exp(z_j)``. Subtracting the largest score first changes nothing
mathematically (the factor ``exp(-max)`` cancels) but keeps ``exp`` from overflowing: logits
like ``[1000, 1001]`` give ``[0.269, 0.731]``, not NaN. A token removed by a sampler has logit
``-inf`` and so probability exactly 0.
"""

from __future__ import annotations

import numpy as np


def _row_max(logits: np.ndarray) -> np.ndarray:
    """(..., V) -> (..., 1) the largest logit of each row, after checking the row can be
    normalised at all."""
    top = np.max(logits, axis=-1, keepdims=True)  # (..., 1)
    if np.isnan(top).any() or np.isposinf(top).any():
        raise ValueError(
            "logits contain NaN or +inf, so they are not a distribution (the model's weights may "
            "have diverged)"
        )
    if np.isneginf(top).any():
        raise ValueError(
            "every token of a row was removed (all logits are -inf): nothing is left to sample; "
            "loosen the filters (top_k, top_p, min_p) or check the logits"
        )
    return top


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, along the last axis.

    Args:
        logits: (..., V) float scores; ``-inf`` marks a removed token.

    Returns:
        (..., V) probabilities in the same dtype, each row summing to 1.

    Raises:
        ValueError: a row is all ``-inf`` (nothing to choose from) or holds NaN or +inf.
    """
    e = np.exp(logits - _row_max(logits))  # the largest becomes exp(0) = 1: no overflow
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from logits, along the last axis: ``z_i - max - log(sum exp(z - max))``.

    Computed directly rather than as ``log(softmax(z))`` so that tiny probabilities keep their
    log (``log(0)`` would be ``-inf``). (..., V) -> (..., V), same dtype.
    """
    shifted = logits - _row_max(logits)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
