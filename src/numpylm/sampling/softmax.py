"""Softmax: scores (logits) -> probabilities.

``p_i = exp(z_i) / sum_j exp(z_j)``. Subtracting the largest score first changes nothing
mathematically (the factor ``exp(-max)`` cancels) but keeps ``exp`` from overflowing: logits
like ``[1000, 1001]`` give ``[0.269, 0.731]``, not NaN. A token removed by a sampler has logit
``-inf`` and so probability exactly 0.

This is numpylm's one softmax: the attention layer (``numpylm.layers.attention``) uses it too.
"""

from __future__ import annotations

import numpy as np

from ..checks import as_int


def check_logits(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """(..., V) -> (..., 1) the largest logit of each row (along ``axis``), after checking that
    every row can be normalised at all.

    Raises:
        ValueError: a row holds NaN or +inf, or every entry of a row is ``-inf``.
    """
    axis = as_int("axis", axis)
    top = np.max(logits, axis=axis, keepdims=True)  # (..., 1)
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


def softmax(
    logits: np.ndarray, axis: int = -1, *, out: np.ndarray | None = None, check: bool = True
) -> np.ndarray:
    """Probabilities from logits, along ``axis``.

    Args:
        logits: (..., V) float scores; ``-inf`` marks a removed token.
        axis: the axis that sums to 1.
        out: an array (which may be ``logits`` itself) to write the result into, instead of a
            new one: attention overwrites its scores this way.
        check: refuse rows that are not a distribution (see Raises). Attention, whose scores
            are finite by construction, turns it off.

    Returns:
        (..., V) probabilities in the same dtype, each row summing to 1.

    Raises:
        ValueError: a row is all ``-inf`` (nothing to choose from) or holds NaN or +inf.
    """
    top = check_logits(logits, axis) if check else logits.max(axis=axis, keepdims=True)
    e = np.subtract(logits, top, out=out)  # the largest becomes exp(0) = 1: no overflow
    np.exp(e, out=e)  # in place: no second array of the input's size
    e /= e.sum(axis=axis, keepdims=True)
    return e


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from logits, along the last axis: ``z_i - max - log(sum exp(z - max))``.

    Computed directly rather than as ``log(softmax(z))`` so that tiny probabilities keep their
    log (``log(0)`` would be ``-inf``). (..., V) -> (..., V), same dtype.
    """
    shifted = logits - check_logits(logits)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
