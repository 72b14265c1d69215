"""The layers of GPT-2, each a small function over NumPy arrays, each forward beside its backward.

Every forward's docstring opens with its formula, and its code is that formula. Shapes use the
names of Karpathy's llm.c:

- ``B`` batch size, ``T`` number of new tokens, ``L`` number of keys a query can see (the cache
  length plus ``T``), ``C`` channels (``n_embd``), ``H`` heads, ``D = C // H`` head size,
  ``V`` vocabulary size.

Every function keeps the dtype of its inputs: a float32 model stays float32 (no silent
promotion to float64), and a float64 model stays float64 for gradient checks. Python scalars
such as ``0.5`` do not change the dtype of an array under NumPy's promotion rules; NumPy scalars
such as ``np.sqrt(2.0)`` would, so constants here are plain Python floats.

One speed rewrite stands beside the formula it computes: ``gelu_fast``, the same numbers as
``gelu`` in one buffer (3.5 ms -> 1.0 ms over a (512, 3072) float32 array, measured), used by
the fast backend and by training; a test keeps the two equal.
"""

from __future__ import annotations

import math

import numpy as np

from .checks import dropout_rate
from .sampling.softmax import softmax

LAYER_NORM_EPS = 1e-5
"""GPT-2's LayerNorm epsilon (``layer_norm_epsilon`` in Hugging Face's ``GPT2Config``)."""

_GELU_C = math.sqrt(2.0 / math.pi)


def embedding(wte: np.ndarray, wpe: np.ndarray, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``wte[ids] + wpe[pos]``: token embedding plus position embedding.

    Args:
        wte: (V, C) token embedding table.
        wpe: (n_ctx, C) learned position embedding table.
        ids: (B, T) integer token ids.
        pos: (B, T) or (T,) integer positions.

    Returns:
        (B, T, C) array.
    """
    return wte[ids] + wpe[pos]  # (B, T, C)


def embedding_backward(
    dout: np.ndarray, ids: np.ndarray, pos: np.ndarray, dwte: np.ndarray, dwpe: np.ndarray
) -> None:
    """Backward of ``embedding``: send each position's gradient back to the rows it read.

    Args:
        dout: (B, T, C) gradient of the loss with respect to the embedding's output.
        ids: (B, T) the token ids of the forward pass.
        pos: (B, T) or (T,) the positions of the forward pass.
        dwte: (V, C) gradient of ``wte``, added to in place (the tied LM head's share may
            already be in it).
        dwpe: (n_ctx, C) gradient of ``wpe``, added to in place.

    A token that occurs several times gets the sum of all its gradients. ``dwte[ids] += dout``
    would be wrong: with repeated ids NumPy writes each row once and drops the rest.
    ``np.add.at`` accumulates every occurrence.
    """
    np.add.at(dwte, ids, dout)  # from "wte[ids]"
    # from "wpe[pos]": with one row of positions shared by the batch, sum over the batch first
    np.add.at(dwpe, pos, dout.sum(axis=0) if pos.ndim == 1 else dout)


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
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)  # biased variance, as PyTorch uses
    rstd = 1.0 / np.sqrt(var + LAYER_NORM_EPS)
    return xc * rstd * w + b


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
    xc = x - x.mean(axis=-1, keepdims=True)  # the forward's statistics, again
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + LAYER_NORM_EPS)  # (..., 1)
    xhat = xc * rstd  # (..., C) the normalised input
    db = dout.reshape(-1, C).sum(axis=0)  # from "+ b": summed over every position
    dw = (dout * xhat).reshape(-1, C).sum(axis=0)  # from "* w"
    dxhat = dout * w  # from "* w"
    # xhat = (x - mean) * rstd, and both mean and rstd depend on every channel of x. With the
    # chain rule through mean and var, the three paths collapse to this (per position):
    #   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    mean_dxhat = dxhat.mean(axis=-1, keepdims=True)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=-1, keepdims=True)
    dx = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)
    return dx, dw, db


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
    return x @ w if b is None else x @ w + b


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


def gelu(x: np.ndarray) -> np.ndarray:
    """``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``, elementwise: GPT-2's
    GELU, in the tanh approximation (``gelu_new`` in Hugging Face).

    A smooth ReLU: about ``x`` for large ``x``, about 0 for very negative ``x``.
    """
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + 0.044715 * (x * x * x))))


def gelu_fast(x: np.ndarray) -> np.ndarray:
    """``gelu``, computed step by step in one array (the same numbers, to rounding).

    It runs over the MLP's (B, T, 4C) activations, the largest of the forward pass, and each
    temporary of that size would cost another pass over memory: written in one line, the
    formula makes six of them.
    """
    u = x * x
    u *= 0.044715
    u += 1.0
    u *= x  # x + 0.044715 x^3
    u *= _GELU_C
    np.tanh(u, out=u)  # tanh(sqrt(2 / pi) (x + 0.044715 x^3))
    u += 1.0
    u *= x
    u *= 0.5
    return u


def gelu_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Backward of ``gelu``: ``dout * gelu'(x)``, elementwise.

    Args:
        dout: gradient with respect to the output.
        x: the forward's input.
        out: the forward's output, ``gelu(x)``.

    Write the forward as ``gelu = x * s`` with ``s = 0.5 (1 + tanh(u))``, a sigmoid of ``2u``,
    and ``u = sqrt(2/pi) (x + 0.044715 x^3)``. Then ``ds/dx = 2 s (1 - s) u'`` (as
    ``1 - tanh^2 = 4 s (1 - s)``), so ``gelu' = s + x ds/dx = s (1 + 2 x (1 - s) u')``, with
    ``u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)``. The forward's output already holds ``s``
    (``s = out / x``), so the backward needs no ``tanh`` (the slowest operation of the MLP):
    the same saving as ``tanh' = 1 - tanh^2`` from the output. At ``x = 0``, ``s = 0.5``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 where x = 0, set next
        s = out / x
    s[x == 0] = 0.5
    du2 = (2.0 * _GELU_C) * (1.0 + (3.0 * 0.044715) * (x * x))  # 2 u'
    return dout * (s * (1.0 + x * (1.0 - s) * du2))


def softmax_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Backward of ``softmax`` (``numpylm.sampling.softmax``) over the last axis, from its
    output ``out``.

    ``d out_j / d x_i = out_j * (delta_ij - out_i)``, so
    ``dx_i = out_i * (dout_i - sum_j dout_j * out_j)``. An entry the forward masked out has
    ``out = 0`` exactly and so gets no gradient.
    """
    dot = np.einsum("...l,...l->...", dout, out)[..., None]  # sum_j dout_j out_j, per row
    dx = dout - dot
    dx *= out  # in place: dx has the size of the attention probabilities, (B, H, T, L)
    return dx


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
    return _apply_dropout(x, keep, rate), keep


def dropout_backward(dout: np.ndarray, keep: np.ndarray, rate: float) -> np.ndarray:
    """Backward of ``dropout``: ``y = x * keep / (1 - rate)`` is linear in ``x``, so the
    gradient goes through the same mask and scale. A dropped value gets no gradient.

    Args:
        dout: gradient with respect to the output, shaped like ``keep``.
        keep: the boolean mask ``dropout`` returned.
        rate: the rate of the forward pass.
    """
    return _apply_dropout(dout, keep, rate)


def _apply_dropout(a: np.ndarray, keep: np.ndarray, rate: float) -> np.ndarray:
    """``a * keep / (1 - rate)``, keeping ``a``'s dtype (the scale is a Python float)."""
    out = a * keep  # a bool mask multiplies as 0 or 1 without changing the dtype
    out *= 1.0 / (1.0 - dropout_rate(rate))
    return out


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, C) -> (B, H, T, D): give each head its own slice of the channels."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, H, T, D) -> (B, T, C): put the heads' outputs side by side again."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    allowed: np.ndarray | None,
    *,
    drop: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``softmax(q @ k.T / sqrt(D), where allowed) @ v``: scaled dot-product attention, for
    all heads at once.

    Each query scores every key it is allowed to see, the scores become weights by softmax,
    and the output is the weighted average of the values.

    Args:
        q: (B, H, T, D) queries of the new tokens.
        k: (B, H, L, D) keys of every token a query may look at (cached ones first).
        v: (B, H, L, D) values, aligned with ``k``.
        allowed: boolean array broadcastable to (B, H, T, L), True where query ``t`` may attend
            to key ``l`` (the causal mask, and padding); None when every key is allowed (one new
            token and no padding).
        drop: for training with dropout, ``(keep, rate)``: the probabilities are dropped with
            ``keep``, a (B, H, T, L) boolean mask from ``dropout_mask``, before they weight the
            values (GPT-2's ``attn_pdrop``). None (the default) drops nothing.

    Returns:
        ``(y, att)``: y (B, H, T, D) the attended values, att (B, H, T, L) the attention
        probabilities (rows sum to 1), before any dropout.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = q @ k.swapaxes(-1, -2)  # (B, H, T, L)
    # In place, as the masking and the softmax: the largest arrays of a training step
    scores *= scale
    if allowed is not None:
        # The most negative finite number, not -inf: exp() of it is exactly 0 after the max is
        # subtracted, and a row that is masked everywhere (a padding token) stays finite.
        np.copyto(scores, np.finfo(scores.dtype).min, where=~allowed)
    # The scores are finite by construction, and a diverged run's NaN must reach the training
    # loop's check rather than stop here: no check of the rows.
    att = softmax(scores, out=scores, check=False)
    weights = att if drop is None else _apply_dropout(att, *drop)  # a query forgets some keys
    return weights @ v, att  # (B, H, T, D), (B, H, T, L)


def attention_backward(
    dy: np.ndarray,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    att: np.ndarray,
    *,
    drop: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of ``attention``, for all heads at once.

    Args:
        dy: (B, H, T, D) gradient with respect to the attended values.
        q, k, v: the forward's (B, H, T, D), (B, H, L, D), (B, H, L, D) inputs.
        att: (B, H, T, L) the attention probabilities the forward returned (the mask is in
            them: masked entries are exactly 0, so no gradient reaches a hidden key).
        drop: the forward's ``(keep, rate)``, or None if it dropped nothing.

    Returns:
        ``(dq, dk, dv)`` with the shapes of ``q``, ``k`` and ``v``.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    weights = att if drop is None else _apply_dropout(att, *drop)  # the forward's, again
    dv = weights.swapaxes(-1, -2) @ dy  # from "weights @ v": (B, H, L, D)
    datt = dy @ v.swapaxes(-1, -2)  # from "weights @ v": (B, H, T, L)
    if drop is not None:
        datt = dropout_backward(datt, *drop)  # from "weights = dropout(att)"
    dscores = softmax_backward(datt, att)  # from "softmax(scores)"
    dscores *= scale  # from "* scale"
    dq = dscores @ k  # from "q @ k.T": (B, H, T, D)
    dk = dscores.swapaxes(-1, -2) @ q  # from "q @ k.T": (B, H, L, D)
    return dq, dk, dv


def causal_mask(T: int, L: int) -> np.ndarray:
    """(T, L) boolean mask: new token ``t`` (at absolute index ``L - T + t``) may see keys
    ``0 .. L - T + t``, never a later one."""
    return np.tri(T, L, k=L - T, dtype=bool)


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
