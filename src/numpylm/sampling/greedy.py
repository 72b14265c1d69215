"""Greedy decoding: always take the single most likely token.

The simplest rule, and the one that makes generation deterministic: the same prompt always gets
the same answer. It is what ``temperature=0`` means, and what ``top_k=1`` amounts to.
"""

from __future__ import annotations

import numpy as np


def greedy(logits: np.ndarray) -> np.ndarray:
    """Keep only the highest-scoring token of each row; every other token gets ``-inf``.

    Among tokens with the same best score the lowest id wins (``np.argmax`` returns the first).

    Args:
        logits: (..., V) scores.

    Returns:
        (..., V) logits of the same dtype with exactly one finite entry per row.
    """
    best = np.argmax(logits, axis=-1)[..., None]  # (..., 1)
    out = np.full_like(logits, -np.inf)
    np.put_along_axis(out, best, np.take_along_axis(logits, best, axis=-1), axis=-1)
    return out
