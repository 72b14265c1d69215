"""Dropout, for training only: zero a random share of the values, scale up the rest."""

from __future__ import annotations

import numpy as np

from ..checks import dropout_rate

check_dropout = dropout_rate
"""The name ``numpylm.checks.dropout_rate`` had here in numpylm 0.1, kept for one release."""


def dropout_mask(shape: tuple[int, ...], rate: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean array of ``shape``, each entry True (kept) with probability ``1 - rate``.

    The random numbers are float32 whatever the model's dtype, so a float32 and a float64
    model given generators in the same state drop the same entries.
    """
    return rng.random(shape, dtype=np.float32) >= dropout_rate(rate)


def dropout(x: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``x * keep / (1 - rate)``: inverted dropout, for training, zeroing each value with
    probability ``rate``.

    The kept values are scaled by ``1 / (1 - rate)``, so every entry keeps its expected value,
    ``E[y] = x``, and the layers after it see inputs of the same size whether dropout is on
    or off (which is why evaluation and generation can simply not call it).

    Args:
        x: array of any shape, e.g. (B, T, C).
        rate: the dropout rate, in ``[0, 1)``.
        rng: the generator the mask is drawn from.

    Returns:
        ``(y, keep)``: y has the shape and dtype of ``x``; keep is the boolean mask of the same
        shape, True where ``x`` was kept (the backward needs it).
    """
    keep = dropout_mask(x.shape, rate, rng)
    return apply_dropout(x, keep, rate), keep


def dropout_backward(dout: np.ndarray, keep: np.ndarray, rate: float) -> np.ndarray:
    """Backward of ``dropout``: ``y = x * keep / (1 - rate)`` is linear in ``x``, so the
    gradient goes through the same mask and scale. A dropped value gets no gradient.

    Args:
        dout: gradient with respect to the output, shaped like ``keep``.
        keep: the boolean mask ``dropout`` returned.
        rate: the rate of the forward pass.
    """
    return apply_dropout(dout, keep, rate)


def apply_dropout(a: np.ndarray, keep: np.ndarray, rate: float) -> np.ndarray:
    """``a * keep / (1 - rate)``: ``a`` through a mask already drawn (``dropout`` and its
    backward, and attention's dropped probabilities), keeping ``a``'s dtype (the scale is a
    Python float)."""
    out = a * keep  # a bool mask multiplies as 0 or 1 without changing the dtype
    out *= 1.0 / (1.0 - dropout_rate(rate))
    return out
