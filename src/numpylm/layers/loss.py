"""The loss: how surprised the model is by the token that really came next."""

from __future__ import annotations

import numpy as np


def cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """``mean(-log softmax(logits)[target])`` over the counted positions: the cross-entropy
    loss, fused with its softmax, and its gradient with respect to the logits.

    Fusing the two makes the gradient simple and stable:
    ``dlogits = (softmax(logits) - onehot(target)) / n``.

    Args:
        logits: (..., V) unnormalised scores, e.g. (B, T, V).
        targets: (...) integer ids in ``[0, V)``; -1 marks a position that does not count
            (PyTorch's ``ignore_index`` habit).
        mask: (...) boolean, True where a position counts; None counts every position.
        weights: (...) float, the weight of each counted position in place of the mean's
            ``1/n``: the loss becomes ``sum(weights * -log softmax(logits)[target])`` and the
            gradient ``weights * (softmax - onehot)``. A weight may be negative (it pushes
            that token's probability down). None: the mean, as above.

    Returns:
        ``(loss, dlogits)``: the mean (or weighted) loss over the ``n`` counted positions (a
        Python float) and the (..., V) gradient, zero at positions that do not count.
    """
    V = logits.shape[-1]
    counted = targets != -1
    if mask is not None:
        counted &= mask
    n = int(counted.sum())
    if n == 0:
        raise ValueError("no position counts towards the loss: every target is -1 or masked out")
    z = logits.reshape(-1, V)  # (N, V)
    rows = np.arange(z.shape[0])
    cols = np.where(counted, targets, 0).reshape(-1)  # any valid column at ignored positions
    z = z - z.max(axis=1, keepdims=True)  # log softmax is shift-invariant; exp cannot overflow
    z_target = z[rows, cols]  # (N,)
    probs = np.exp(z, out=z)  # (N, V), reusing the shifted copy's memory
    sumexp = probs.sum(axis=1)
    nll = np.log(sumexp) - z_target  # (N,) -log softmax(logits)[target]
    if weights is None:
        weight = counted.reshape(-1) * (1.0 / n)  # (N,) float64: 1/n where counted, else 0
    else:
        weight = np.where(counted, weights, 0.0).reshape(-1)  # (N,), 0 where not counted
    loss = float(nll @ weight)
    probs *= (weight / sumexp).astype(probs.dtype)[:, None]  # softmax, times the weight
    probs[rows, cols] -= weight.astype(probs.dtype)  # minus onehot(target), times the weight
    return loss, probs.reshape(logits.shape)
