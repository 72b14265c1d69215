"""Min-p (Nguyen et al. 2024): keep tokens at least ``min_p`` times as likely as the best one.

A threshold that scales with the model's confidence: when the top token has probability 0.9 and
``min_p = 0.1``, only tokens with p >= 0.09 survive; when the distribution is flat (top token
0.05), tokens down to 0.005 do. The rule is ``p_i >= min_p * p_max`` (inclusive). Since
``p_i / p_max = exp(z_i - z_max)``, no softmax is needed, and renormalising by earlier filters
does not change the ratio. ``min_p = 0`` keeps everything; ``min_p = 1`` keeps only the ties for
the top.
"""

from __future__ import annotations

import numpy as np

from ..checks import as_float, in_range


def check_min_p(min_p: object) -> float:
    """``min_p`` as a float, or an error saying min_p must be in [0, 1]."""
    value = as_float("min_p", min_p)
    return in_range("min_p", value, "a number in [0, 1]", 0 <= value <= 1)


def min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Keep tokens whose probability is at least ``min_p`` times the largest one.

    A ratio within float rounding of ``min_p`` counts as reaching it.

    Args:
        logits: (..., V) scores; ``-inf`` marks tokens already removed.
        min_p: the fraction of the top probability a token needs, in [0, 1].

    Returns:
        (..., V) logits of the same dtype, ``-inf`` for tokens below the threshold.
    """
    return apply_min_p(logits, check_min_p(min_p))


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """``min_p`` for a value already checked by ``check_min_p`` (the ``Sampler`` checks its
    values once, when it is made, not at every token)."""
    if min_p == 0:
        return logits
    ratio = np.exp(logits - np.max(logits, axis=-1, keepdims=True))  # (..., V) p_i / p_max
    slack = 32 * float(np.finfo(ratio.dtype).eps)
    return np.where(ratio >= min_p * (1 - slack), logits, -np.inf)
