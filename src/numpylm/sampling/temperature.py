"""Temperature: sharpen or flatten the distribution.

Dividing the logits by ``T`` before the softmax raises every probability to the power ``1/T``
(and renormalises): ``p_i ∝ exp(z_i / T)``. ``T < 1`` makes likely tokens likelier (more
predictable text), ``T > 1`` gives unlikely tokens more of a chance (more surprising text),
``T = 1`` leaves the model's distribution as it is. As ``T -> 0`` all the mass goes to the best
token, so ``T = 0`` means greedy decoding (no division by zero).
"""

from __future__ import annotations

import numpy as np

from ..checks import float32_factor
from .greedy import greedy


def check_temperature(t: object) -> float:
    """``t`` as a float, or an error saying temperature must be 0 (greedy) or a number float32
    can divide by (``checks.float32_factor``)."""
    return float32_factor("temperature", t, "1 leaves the model's distribution", zero="greedy")


def temperature(logits: np.ndarray, t: float) -> np.ndarray:
    """Scale logits by ``1 / t``; ``t = 0`` keeps only the best token (see ``greedy``).

    Args:
        logits: (..., V) scores.
        t: the temperature, a finite number >= 0.

    Returns:
        (..., V) logits of the same dtype.
    """
    return apply_temperature(logits, check_temperature(t))


def apply_temperature(logits: np.ndarray, t: float) -> np.ndarray:
    """``temperature`` for a ``t`` already checked by ``check_temperature``: what the
    ``Sampler`` runs at every token, having checked its values once, when it was made."""
    if t == 0:
        return greedy(logits)
    if t == 1:
        return logits
    with np.errstate(over="ignore"):
        scaled = logits / t  # a Python float: a float32 array stays float32
    overflow = np.isinf(scaled) & np.isfinite(logits)
    if not overflow.any():
        return scaled
    # A tiny t carries scores past float32's range. Softmax ignores a shift, so divide the gap
    # to each row's best score instead: the best becomes 0, and a gap too large to carry
    # becomes -inf, probability 0, which is what float32 would give it anyway.
    with np.errstate(over="ignore", invalid="ignore"):
        return (logits - np.max(logits, axis=-1, keepdims=True)) / t
