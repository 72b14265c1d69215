"""Normalisation: each position's channels rescaled before a block reads them.

GPT-2 uses LayerNorm (subtract the mean, divide by the standard deviation, then a gain and a
bias); the Llama family uses RMSNorm, the same without the mean and the bias.
"""

from __future__ import annotations

import numpy as np

LAYER_NORM_EPS = 1e-5
"""GPT-2's LayerNorm epsilon (``layer_norm_epsilon`` in Hugging Face's ``GPT2Config``)."""


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * w + b``, statistics over the last axis: normalise each
    position's channels to mean 0 and variance 1, then scale and shift.

    Args:
        x: (..., C) input.
        w: (C,) gain.
        b: (C,) bias.

    Returns:
        (..., C).
    """
    mean = _mean(x)  # (..., 1)
    xc = x - mean
    var = _mean(xc * xc)  # biased variance, as PyTorch uses
    rstd = 1.0 / np.sqrt(var + LAYER_NORM_EPS)
    return xc * rstd * w + b


def layer_norm_fast(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``layer_norm``, computed step by step in one array (the same numbers, to rounding).

    Over a prompt's (T, C) activations each temporary of the formula is another pass over
    memory, and NumPy's ``mean`` adds a Python wrapper per call: (512, 768) takes 2.5 ms as
    written in ``layer_norm``, 0.56 ms so (measured). ``np.add.reduce`` is the sum without the
    wrapper, ``einsum`` the sum of squares without the (..., C) square.
    """
    C = x.shape[-1]
    mean = np.add.reduce(x, axis=-1, keepdims=True) / C  # (..., 1)
    xc = x - mean  # (..., C), the one new array: the steps below write into it
    var = np.einsum("...c,...c->...", xc, xc)[..., None] / C  # (..., 1), biased
    xc *= 1.0 / np.sqrt(var + LAYER_NORM_EPS)
    xc *= w
    xc += b
    return xc


def layer_norm_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of ``layer_norm``.

    Args:
        dout: (..., C) gradient with respect to the output.
        x: (..., C) the forward's input (its mean and variance are recomputed: cheaper than
            keeping them).
        w: (C,) gain.

    Returns:
        ``(dx, dw, db)`` with the shapes of ``x``, ``w`` and ``w``.
    """
    C = x.shape[-1]
    xhat = x - _mean(x)  # the forward's statistics, again
    rstd = 1.0 / np.sqrt(_mean(xhat * xhat) + LAYER_NORM_EPS)  # (..., 1)
    xhat *= rstd  # (..., C) the normalised input
    d2 = dout.reshape(-1, C)  # every position a row
    db = d2.sum(axis=0)  # from "+ b": summed over every position
    dw = np.einsum("nc,nc->c", d2, xhat.reshape(-1, C))  # from "* w": sum of dout * xhat
    dxhat = dout * w  # from "* w"
    # xhat = (x - mean) * rstd, and both mean and rstd depend on every channel of x. With the
    # chain rule through mean and var, the three paths collapse to this (per position):
    #   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    # computed in place: these run at every LayerNorm, twice per block
    dx = dxhat - _mean(dxhat)
    xhat *= np.einsum("...c,...c->...", dxhat, xhat)[..., None] * (1.0 / C)  # mean(dxhat xhat)
    dx -= xhat
    dx *= rstd
    return dx, dw, db


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x**2) + eps) * w``, the mean over the last axis: scale each position's
    channels to a root mean square of 1, then by a learned gain.

    LayerNorm (``layers.layer_norm``) without its two other steps: no mean is subtracted and no
    bias added. It costs less and trains as well, which is why the Llama family uses it.

    Args:
        x: (..., C) input.
        w: (C,) gain.
        eps: added to the mean square so a zero vector does not divide by zero (1e-5 or 1e-6,
            from the model's config).

    Returns:
        (..., C).
    """
    ms = _mean(x * x)  # (..., 1) the mean square
    # w / rms first: (..., C), then one product. Dividing x by the (..., 1) column directly
    # broadcasts it along the channels, which NumPy does six times slower at 512 tokens.
    return x * (w / np.sqrt(ms + eps))


def _mean(x: np.ndarray) -> np.ndarray:
    """(..., C) -> (..., 1): ``x.mean(axis=-1, keepdims=True)``, the same numbers without the
    Python layer NumPy wraps around ``mean``. A decoding step normalises one token's row at a
    time, where that layer is most of the cost: 2.1 us against 3.8 for 576 channels, and a
    SmolLM2 step takes 61 means (measured on the machine of ``docs/benchmarks.md``)."""
    return np.add.reduce(x, axis=-1, keepdims=True) / x.shape[-1]
