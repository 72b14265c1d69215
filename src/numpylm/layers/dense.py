"""The linear (dense) layer, ``x @ w + b``: most of a transformer's weights and most of its work."""

from __future__ import annotations

import numpy as np


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w + b``: an affine map (no bias when ``b`` is None).

    GPT-2 stores its weights as (in, out) (OpenAI's ``Conv1D``), so no transpose is needed.

    Args:
        x: (..., C_in) input.
        w: (C_in, C_out) weight.
        b: (C_out,) bias, or None.

    Returns:
        (..., C_out).
    """
    # One (N, C_in) @ (C_in, C_out) product over all N positions: given a (B, T, C_in) stack,
    # NumPy would multiply each of the B matrices on its own (4x slower for 100 decoding rows).
    x2 = x.reshape(-1, x.shape[-1])  # (N, C_in)
    y = x2 @ w  # (N, C_out)
    if b is not None:
        y += b  # in place: the same numbers, without a second (N, C_out) array
    return y.reshape(*x.shape[:-1], w.shape[1])


def linear_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of ``linear``: ``out = x @ w + b``.

    Args:
        dout: (..., C_out) gradient with respect to the output.
        x: (..., C_in) the forward's input.
        w: (C_in, C_out) weight.

    Returns:
        ``(dx, dw, db)``: (..., C_in), (C_in, C_out), (C_out,).
    """
    x2 = x.reshape(-1, x.shape[-1])  # (N, C_in): every position of every sequence is a row,
    d2 = dout.reshape(-1, dout.shape[-1])  # (N, C_out)  so dw is one large matrix product
    dw = x2.T @ d2  # from "x @ w": each weight collects input * output-gradient over positions
    db = d2.sum(axis=0)  # from "+ b": the bias is added at every position
    dx = dout @ w.T  # from "x @ w"
    return dx, dw, db
