"""Training's backward pass: the gradient of the loss, written out by hand.

There is one forward pass, ``GPT.forward`` (``model.py``). To get the gradient of the loss
with respect to every weight, the backward pass walks that forward in reverse, and each step
reads arrays the forward computed. So training runs the same forward with a backend of its own,
``recording(tape)``: the plain layers, each pushing onto a ``Tape`` what its backward will read
(as llm.c keeps its ``ActivationTensors``). The backward pops them, last first:

    forward (model.py)                          backward (reverse order)
    x = dropout(wte[ids] + wpe[pos])            embedding_backward
    for each block:                             for each block, last first:
        x = x + dropout(attn(ln_1(x)))              x = x + dropout(mlp(ln_2(x)))
        x = x + dropout(mlp(ln_2(x)))               x = x + dropout(attn(ln_1(x)))
    logits = ln_f(x) @ wte.T                    ln_f, and the tied LM head
    loss = cross_entropy(logits, targets)       dlogits = softmax - onehot(targets)

Each line of the backward names, in a comment, the forward line it inverts; each step is the
``*_backward`` twin in ``numpylm.layers`` of a forward function. A residual ``x = x + f(x)``
passes the gradient through unchanged and adds the branch's.

Dropout, a training-only idea, happens here and nowhere else: the inference backends' dropout
returns its input. With a ``rate`` above 0, ``recording`` drops at GPT-2's three sites (Hugging
Face's ``embd_pdrop``, ``attn_pdrop`` and ``resid_pdrop``, one rate for all): the embedding's
output, the attention probabilities, and each residual branch's output before it is added. Each
mask is drawn from ``rng`` in the order of the forward pass (the same generator state gives the
same masks) and kept on the tape, and the backward sends the gradient through the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ... import layers
from ...layers import (
    attention_backward,
    dropout,
    dropout_backward,
    dropout_mask,
    embedding_backward,
    gelu_backward,
    gelu_fast,
    layer_norm_backward,
    linear_backward,
    merge_heads,
    split_heads,
)
from ..backends import Backend, in_layout_of

Params = dict[str, np.ndarray]
Saved = tuple[np.ndarray | None, ...]


class Tape:
    """What the forward pass saved for the backward: a stack of ``(op, arrays)``, pushed in the
    order of the forward and popped in reverse. Each pop names the operation it expects, so a
    backward that fell out of step with its forward stops at once instead of computing nonsense.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[str, Saved]] = []

    def push(self, op: str, *arrays: np.ndarray | None) -> None:
        self.entries.append((op, arrays))

    def pop(self, op: str) -> Saved:
        got, arrays = self.entries.pop()
        if got != op:
            raise RuntimeError(f"the backward expected {op!r} on the tape, found {got!r}")
        return arrays

    def saved(self, op: str, index: int = 0) -> list[np.ndarray]:
        """Array ``index`` of every entry of ``op``, in the order of the forward
        (``GPT.attention_maps`` reads the attention probabilities here, ``GPT.hidden_states``
        the normalisations' inputs)."""
        return _arrays([arrays[index] for got, arrays in self.entries if got == op])


class Forward(Protocol):
    """A model with ``GPT.forward``'s interface (the recording needs only its ``backend``)."""

    def forward(self, ids: Any, cache: Any = None, *, backend: Any = None) -> np.ndarray: ...


def record(
    model: Forward, ids: np.ndarray, rate: float = 0.0, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, Tape]:
    """The model's own forward pass over (B, T) ``ids`` from position 0, run with the
    ``recording`` backend: ``(logits, tape)``, the (B, T, V) logits and what ``backward``
    reads."""
    tape = Tape()
    return model.forward(ids, backend=recording(tape, rate, rng)), tape


def recording(tape: Tape, rate: float = 0.0, rng: np.random.Generator | None = None) -> Backend:
    """The training backend: ``numpylm.layers`` as written (and ``gelu_fast``, the same numbers),
    each call pushing onto ``tape`` what its backward reads; dropout at ``rate``, with masks from
    ``rng`` (0: nothing dropped, nothing drawn, so training without dropout costs nothing)."""
    if rate and rng is None:
        raise ValueError("a dropout rate needs rng, the generator of its masks")

    def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        tape.push("linear", x)
        return layers.linear(x, w, b)

    def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        tape.push("layer_norm", x)
        return layers.layer_norm(x, w, b)

    def gelu(x: np.ndarray) -> np.ndarray:
        out = gelu_fast(x)
        tape.push("gelu", x, out)
        return out

    def attention(
        q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray | None
    ) -> np.ndarray:
        keep = None  # with dropout, each query forgets some of the keys it would weigh
        if rate and rng is not None:
            keep = dropout_mask((*q.shape[:3], k.shape[2]), rate, rng)  # (B, H, T, L)
        y, att = layers.attention(q, k, v, allowed, drop=None if keep is None else (keep, rate))
        tape.push("attention", q, k, v, att, keep)
        return y

    def drop(x: np.ndarray) -> np.ndarray:
        if not rate or rng is None:
            tape.push("dropout", None)
            return x
        y, keep = dropout(x, rate, rng)
        tape.push("dropout", keep)
        return y

    return Backend("recording", linear, layer_norm, gelu, attention, dropout=drop)


def backward(
    params: Params,
    n_layer: int,
    n_head: int,
    ids: np.ndarray,
    tape: Tape,
    dlogits: np.ndarray,
    rate: float = 0.0,
) -> Params:
    """The gradient of the loss with respect to every parameter, from the (B, T, V) gradient of
    the logits and the ``tape`` of the forward over the (B, T) ``ids`` (``rate``: its dropout
    rate, 0 if it dropped nothing). Empties the tape. Returns a dict with the names of
    ``params``, in their order."""
    grads: Params = {}
    wte = params["wte.weight"]
    V, C = wte.shape
    (ln_f,) = _arrays(tape.pop("linear"))
    # from "logits = ln_f(x) @ wte.T": the tied LM head gives wte its first share of gradient;
    # (V, C) column-major like wte itself, so the optimiser's updates run in memory order
    grads["wte.weight"] = (ln_f.reshape(-1, C).T @ dlogits.reshape(-1, V)).T
    dx = dlogits @ wte  # from "logits = ln_f(x) @ wte.T": (B, T, C)
    dx = _layer_norm_backward(dx, tape, params, grads, "ln_f")  # from "ln_f(x)"
    for i in reversed(range(n_layer)):
        dx = block_backward(params, f"h.{i}.", dx, tape, grads, n_head, rate)
    dx = _dropout_backward(dx, tape, rate)  # from "x = dropout(...)"
    # from "x = wte[ids] + wpe[pos]": the embedding adds wte's second share
    grads["wpe.weight"] = np.zeros_like(params["wpe.weight"])
    embedding_backward(dx, ids, np.arange(ids.shape[1]), grads["wte.weight"], grads["wpe.weight"])
    return {name: grads[name] for name in params}


def block_backward(
    params: Params, h: str, dx: np.ndarray, tape: Tape, grads: Params, n_head: int, rate: float
) -> np.ndarray:
    """Backward of ``GPT.block``: the (B, T, C) gradient of block ``h``'s output -> of its input,
    popping the block's entries off the tape. Fills ``grads`` with the block's gradients."""
    # the MLP branch, last line first
    dout = _dropout_backward(dx, tape, rate)  # from "dropout(linear(u, mlp.c_proj))"
    du = _linear_backward(dout, tape, params, grads, h + "mlp.c_proj")  # from "linear(u, ...)"
    fc, u = _arrays(tape.pop("gelu"))
    dfc = gelu_backward(du, fc, u)  # from "u = gelu(fc)": (B, T, 4C)
    dm = _linear_backward(dfc, tape, params, grads, h + "mlp.c_fc")  # from "linear(m, c_fc)"
    # from "x = x + ...": the residual passes dx on, and ln_2 adds its share
    dx = dx + _layer_norm_backward(dm, tape, params, grads, h + "ln_2")

    # the attention branch
    dout = _dropout_backward(dx, tape, rate)  # from "dropout(linear(y, attn.c_proj))"
    dy = _linear_backward(dout, tape, params, grads, h + "attn.c_proj")  # "linear(y, ...)"
    dy = split_heads(dy, n_head)  # from "y = merge_heads(...)": (B, H, T, D)
    *saved, keep = tape.pop("attention")
    q, k, v, att = _arrays(saved)
    drop = None if keep is None else (keep, rate)
    dq, dk, dv = attention_backward(dy, q, k, v, att, drop=drop)  # from "attention(q, k, v)"
    # from the three slices of "split_heads(qkv, 3 * H)": the heads side by side, (B, T, 3C)
    dqkv = merge_heads(np.concatenate([dq, dk, dv], axis=1))
    da = _linear_backward(dqkv, tape, params, grads, h + "attn.c_attn")  # from "qkv = ..."
    # from "x = x + ...": the residual passes dx on, and ln_1 adds its share
    return dx + _layer_norm_backward(da, tape, params, grads, h + "ln_1")


def _arrays(saved: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """The arrays of a tape entry that always holds arrays (only dropout's masks may be None)."""
    assert all(a is not None for a in saved)
    return [a for a in saved if a is not None]


def _dropout_backward(dout: np.ndarray, tape: Tape, rate: float) -> np.ndarray:
    """Through the mask the forward's dropout kept, or unchanged if it dropped none."""
    (keep,) = tape.pop("dropout")
    return dout if keep is None else dropout_backward(dout, keep, rate)


def _linear_backward(
    dout: np.ndarray, tape: Tape, params: Params, grads: Params, name: str
) -> np.ndarray:
    """``layers.linear_backward`` for the layer ``name``: stores its weight and bias gradients
    in ``grads`` and returns the gradient of its input (which it pops off the tape)."""
    (x,) = _arrays(tape.pop("linear"))
    w = params[name + ".weight"]
    dx, dw, grads[name + ".bias"] = linear_backward(dout, x, w)
    grads[name + ".weight"] = in_layout_of(w, dw)  # laid out as the weight (decoding_layout)
    return dx


def _layer_norm_backward(
    dout: np.ndarray, tape: Tape, params: Params, grads: Params, name: str
) -> np.ndarray:
    """``layers.layer_norm_backward`` for the layer ``name``, as ``_linear_backward``."""
    (x,) = _arrays(tape.pop("layer_norm"))
    dx, grads[name + ".weight"], grads[name + ".bias"] = layer_norm_backward(
        dout, x, params[name + ".weight"]
    )
    return dx
