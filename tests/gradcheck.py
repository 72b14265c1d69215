"""Finite differences, the independent reference every hand-written gradient is checked against.

For a function ``f`` of an array ``a``, ``(f(a + h e_i) - f(a - h e_i)) / 2h`` estimates
``df/da_i`` with an error of order ``h^2`` that has nothing to do with the backward code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

H = 1e-5  # the step, for float64: h^2 truncation and 1e-16/h rounding both stay near 1e-10


def numerical_grad(f: Callable[[], float], a: np.ndarray) -> np.ndarray:
    """Central differences of ``f()`` with respect to every entry of ``a`` (changed in place,
    then restored)."""
    grad = np.zeros_like(a)
    flat, gflat = a.ravel(order="K"), grad.ravel(order="K")  # views, in memory order
    assert np.shares_memory(flat, a)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + H
        up = f()
        flat[i] = old - H
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * H)
    return grad


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """``|a - b| / max(|a|, |b|)`` over the whole array (its Euclidean norm)."""
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    assert scale > 0, "a gradient that is identically zero checks nothing"
    return float(np.linalg.norm(a - b) / scale)
