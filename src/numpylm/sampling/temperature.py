"""Temperature: sharpen or flatten the distribution.

Dividing the logits by ``T`` before the softmax raises every probability to the power ``1/T``
(and renormalises): ``p_i ∝ exp(z_i / T)``. ``T < 1`` makes likely tokens likelier (more
predictable text), ``T > 1`` gives unlikely tokens more of a chance (more surprising text),
``T = 1`` leaves the model's distribution as it is. As ``T -> 0`` all the mass goes to the best
token, so ``T = 0`` means greedy decoding (no division by zero).
"""

from __future__ import annotations

import numpy as np

from ..checks import as_float, in_range
from .greedy import greedy


def check_temperature(t: object) -> float:
    """``t`` as a float, or an error saying temperature must be a finite number >= 0."""
    value = as_float("temperature", t)
    return in_range("temperature", value, "a finite number >= 0 (0 means greedy)", value >= 0)


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
    return logits / t  # a Python float: a float32 array stays float32
