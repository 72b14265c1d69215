"""Training's forward and backward pass: the gradient of the loss, written out by hand.

``GPT.forward`` (``model.py``) computes logits and keeps nothing. Training needs more: to get
the gradient of the loss with respect to every weight, the backward pass walks the forward in
reverse, and each step reads arrays the forward computed. So training has a forward of its own,
the same computation line for line, which records those arrays in a typed record per block
(``BlockRecord``, as llm.c's ``ActivationTensors``), and a backward that mirrors it:

    forward                                     backward (reverse order)
    x = wte[ids] + wpe[pos]                     embedding_backward
    for each block:                             for each block, last first:
        x = x + attn(ln_1(x))                       x = x + mlp(ln_2(x))
        x = x + mlp(ln_2(x))                        x = x + attn(ln_1(x))
    logits = ln_f(x) @ wte.T                    ln_f, and the tied LM head
    loss = cross_entropy(logits, targets)       dlogits = softmax - onehot(targets)

Each line of the backward names, in a comment, the forward line it inverts; each step is the
``*_backward`` twin in ``layers`` of a forward function. A residual ``x = x + f(x)`` passes the
gradient through unchanged and adds the branch's.

Dropout, a training-only idea, lives here and nowhere else: with a ``rate`` above 0, the
forward drops at GPT-2's three sites (Hugging Face's ``embd_pdrop``, ``attn_pdrop`` and
``resid_pdrop``, one rate for all): the embedding's output, the attention probabilities, and
each residual branch's output before it is added. It records each mask, drawn from ``rng`` in
the order of the forward pass (the same generator state gives the same masks), and the
backward sends the gradient through the same masks. This module works on plain dicts of arrays
(``params``, named as ``model.params``); ``GPT.loss_and_grads`` calls ``loss_and_grads`` here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...layers import (
    attention,
    attention_backward,
    causal_mask,
    cross_entropy,
    dropout,
    dropout_backward,
    dropout_mask,
    embedding,
    embedding_backward,
    gelu_backward,
    gelu_fast,
    layer_norm,
    layer_norm_backward,
    linear,
    linear_backward,
    merge_heads,
    split_heads,
)

Params = dict[str, np.ndarray]


@dataclass
class BlockRecord:
    """What the backward of one block reads, recorded by its forward (B sequences of T tokens;
    the ``*_keep`` masks are None without dropout).

    Attributes:
        x: (B, T, C) the block's input, which ``ln_1`` reads.
        ln_1: (B, T, C) ``ln_1(x)``, which ``attn.c_attn`` reads.
        q, k, v: (B, H, T, D) the queries, keys and values.
        att: (B, H, T, T) the attention probabilities.
        att_keep: (B, H, T, T) the dropout mask of the probabilities.
        y: (B, T, C) the attended values, heads merged, which ``attn.c_proj`` reads.
        attn_keep: (B, T, C) the dropout mask of the attention branch.
        x_mid: (B, T, C) the residual stream after attention, which ``ln_2`` reads.
        ln_2: (B, T, C) ``ln_2(x_mid)``, which ``mlp.c_fc`` reads.
        fc: (B, T, 4C) ``mlp.c_fc``'s output, which GELU reads.
        gelu: (B, T, 4C) GELU's output, which ``mlp.c_proj`` reads.
        mlp_keep: (B, T, C) the dropout mask of the MLP branch.
    """

    x: np.ndarray
    ln_1: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    att: np.ndarray
    att_keep: np.ndarray | None
    y: np.ndarray
    attn_keep: np.ndarray | None
    x_mid: np.ndarray
    ln_2: np.ndarray
    fc: np.ndarray
    gelu: np.ndarray
    mlp_keep: np.ndarray | None


@dataclass
class Record:
    """What the whole backward reads: the embedding's mask, every block's record, ln_f's input
    and output (the LM head reads the output)."""

    embd_keep: np.ndarray | None
    blocks: list[BlockRecord]
    ln_f_in: np.ndarray
    ln_f: np.ndarray


def forward(
    params: Params,
    n_head: int,
    ids: np.ndarray,
    rate: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, Record]:
    """The forward pass over (B, T) ids from position 0, recording what the backward needs;
    with a dropout ``rate`` above 0, dropping with masks drawn from ``rng``.

    Returns:
        ``(logits, record)``: (B, T, V) logits, equal to ``GPT.forward``'s (to rounding), and
        the ``Record``.
    """
    if rate and rng is None:
        raise ValueError("a dropout rate needs rng, the generator of its masks")
    T = ids.shape[1]
    pos = np.arange(T)  # (T,): training reads whole windows, never padding
    allowed = causal_mask(T, T) if T > 1 else None  # (T, T)
    x = embedding(params["wte.weight"], params["wpe.weight"], ids, pos)  # (B, T, C)
    x, embd_keep = _site(x, rate, rng)
    blocks = []
    for i in range(_n_layer(params)):
        x, block = block_forward(params, f"h.{i}.", x, n_head, allowed, rate, rng)
        blocks.append(block)
    ln_f = layer_norm(x, params["ln_f.weight"], params["ln_f.bias"])
    logits = ln_f @ params["wte.weight"].T  # (B, T, V): the LM head is the token embedding
    return logits, Record(embd_keep, blocks, x, ln_f)


def block_forward(
    params: Params,
    h: str,
    x: np.ndarray,
    n_head: int,
    allowed: np.ndarray | None,
    rate: float,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, BlockRecord]:
    """Block ``h`` (``"h.0."``, ...) on the (B, T, C) residual stream: ``GPT.block``, with its
    arrays recorded. Returns the (B, T, C) output and the record."""
    ln_1 = layer_norm(x, params[h + "ln_1.weight"], params[h + "ln_1.bias"])
    qkv = linear(ln_1, params[h + "attn.c_attn.weight"], params[h + "attn.c_attn.bias"])
    q, k, v = (split_heads(t, n_head) for t in np.split(qkv, 3, axis=-1))  # 3 x (B, H, T, D)
    att_keep = None  # with dropout, each query forgets some of the keys it would weigh
    if rate and rng is not None:
        att_keep = dropout_mask((*q.shape[:3], k.shape[2]), rate, rng)  # (B, H, T, T)
    drop = None if att_keep is None else (att_keep, rate)
    y, att = attention(q, k, v, allowed, drop=drop)  # (B, H, T, D), (B, H, T, T)
    y = merge_heads(y)  # (B, T, C)
    out, attn_keep = _site(linear(y, *_wb(params, h + "attn.c_proj")), rate, rng)
    x_mid = x + out
    ln_2 = layer_norm(x_mid, params[h + "ln_2.weight"], params[h + "ln_2.bias"])
    fc = linear(ln_2, *_wb(params, h + "mlp.c_fc"))  # (B, T, 4C)
    g = gelu_fast(fc)
    out, mlp_keep = _site(linear(g, *_wb(params, h + "mlp.c_proj")), rate, rng)  # (B, T, C)
    record = BlockRecord(
        x, ln_1, q, k, v, att, att_keep, y, attn_keep, x_mid, ln_2, fc, g, mlp_keep
    )
    return x_mid + out, record


def recorded(
    params: Params, n_head: int, ids: np.ndarray, what: str, one: bool = False
) -> list[np.ndarray]:
    """What the forward pass over (B, T) ``ids`` computed, layer by layer, read back from its
    record: ``"att"``, every block's (B, H, T, T) attention probabilities; ``"x"``, the residual
    stream: every block's (B, T, C) input and then the last block's output (n_layer + 1
    arrays). ``one``: the ids were one sequence, so drop the batch axis."""
    record = forward(params, n_head, ids)[1]
    arrays = [getattr(block, what) for block in record.blocks]
    if what == "x":
        arrays.append(record.ln_f_in)
    return [a[0] for a in arrays] if one else arrays


def backward(
    params: Params,
    n_head: int,
    ids: np.ndarray,
    record: Record,
    dlogits: np.ndarray,
    rate: float = 0.0,
) -> Params:
    """The gradient of the loss with respect to every parameter, from the (B, T, V) gradient of
    the logits and the forward's ``record`` (``rate``: its dropout rate, 0 if it dropped
    nothing). Returns a dict with the names of ``params``, in their order."""
    grads: Params = {}
    wte = params["wte.weight"]
    V, C = wte.shape
    # from "logits = ln_f @ wte.T": the tied LM head gives wte its first share of gradient;
    # (V, C) column-major like wte itself, so the optimiser's updates run in memory order
    grads["wte.weight"] = (record.ln_f.reshape(-1, C).T @ dlogits.reshape(-1, V)).T
    dx = dlogits @ wte  # from "logits = ln_f @ wte.T": (B, T, C)
    dx = _layer_norm_backward(dx, record.ln_f_in, params, grads, "ln_f")  # from "ln_f = ..."
    for i in reversed(range(len(record.blocks))):
        dx = block_backward(params, f"h.{i}.", dx, record.blocks[i], grads, n_head, rate)
    dx = _site_backward(dx, record.embd_keep, rate)  # from "x = dropout(x)"
    # from "x = wte[ids] + wpe[pos]": the embedding adds wte's second share
    grads["wpe.weight"] = np.zeros_like(params["wpe.weight"])
    embedding_backward(dx, ids, np.arange(ids.shape[1]), grads["wte.weight"], grads["wpe.weight"])
    return {name: grads[name] for name in params}


def block_backward(
    params: Params,
    h: str,
    dx: np.ndarray,
    r: BlockRecord,
    grads: Params,
    n_head: int,
    rate: float,
) -> np.ndarray:
    """Backward of ``block_forward``: the (B, T, C) gradient of block ``h``'s output -> of its
    input. Fills ``grads`` with the block's parameter gradients."""
    # the MLP branch, last line first
    dout = _site_backward(dx, r.mlp_keep, rate)  # from "out = dropout(...)"
    dg = _linear_backward(dout, r.gelu, params, grads, h + "mlp.c_proj")  # from "linear(g, ...)"
    dfc = gelu_backward(dg, r.fc, r.gelu)  # from "g = gelu(fc)": (B, T, 4C)
    dln_2 = _linear_backward(dfc, r.ln_2, params, grads, h + "mlp.c_fc")  # from "fc = ..."
    # from "x_mid + out": the residual passes dx on, and ln_2 adds its share
    dx = dx + _layer_norm_backward(dln_2, r.x_mid, params, grads, h + "ln_2")

    # the attention branch
    dout = _site_backward(dx, r.attn_keep, rate)  # from "out = dropout(...)"
    dy = _linear_backward(dout, r.y, params, grads, h + "attn.c_proj")  # from "linear(y, ...)"
    dy = split_heads(dy, n_head)  # from "y = merge_heads(y)": (B, H, T, D)
    drop = None if r.att_keep is None else (r.att_keep, rate)
    dq, dk, dv = attention_backward(dy, r.q, r.k, r.v, r.att, drop=drop)  # "attention(...)"
    dqkv = np.concatenate(
        [merge_heads(d) for d in (dq, dk, dv)], axis=-1
    )  # from "split": (B, T, 3C)
    dln_1 = _linear_backward(dqkv, r.ln_1, params, grads, h + "attn.c_attn")  # "qkv = ..."
    # from "x_mid = x + out": the residual passes dx on, and ln_1 adds its share
    return dx + _layer_norm_backward(dln_1, r.x, params, grads, h + "ln_1")


def loss_and_grads(
    params: Params,
    n_head: int,
    ids: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray | None = None,
    rate: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[float, Params]:
    """The mean cross-entropy of predicting ``targets`` from ``ids``, and its gradient for
    every parameter. The arguments are checked already (``GPT.loss_and_grads`` does that).

    Args:
        params: the model's parameters, by name.
        n_head: attention heads per block.
        ids: (B, T) integer token ids, T <= n_ctx.
        targets: (B, T) integers: the token that should follow each position (usually ``ids``
            shifted by one). A target of -1 does not count.
        mask: (B, T) bool, True where a position counts towards the loss; None counts every
            position. It only selects which predictions are scored: every token is still read
            and attended to.
        rate: the dropout rate in ``[0, 1)``, at GPT-2's three sites; 0 is the exact model,
            with no randomness.
        rng: the generator of the dropout masks; the same state gives the same masks (and the
            same loss and gradient).

    Returns:
        ``(loss, grads)``: the mean loss over the counted positions (a Python float), and a
        dict with exactly the names and shapes of ``params``, in their dtype.
    """
    logits, record = forward(params, n_head, ids, rate, rng)  # (B, T, V)
    loss, dlogits = cross_entropy(logits, targets, mask)
    del logits  # the largest activation; its gradient has taken its place
    return loss, backward(params, n_head, ids, record, dlogits, rate)


def _n_layer(params: Params) -> int:
    return sum(1 for name in params if name.endswith(".ln_1.weight"))


def _wb(params: Params, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A linear layer's weight and bias."""
    return params[name + ".weight"], params[name + ".bias"]


def _site(
    x: np.ndarray, rate: float, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` through a dropout site: ``(dropout(x), its mask)`` while dropping; ``(x, None)``
    at rate 0 (no mask made, nothing drawn, so training without dropout costs nothing)."""
    if not rate:
        return x, None
    assert rng is not None  # forward refuses a rate without a generator
    return dropout(x, rate, rng)


def _site_backward(dout: np.ndarray, keep: np.ndarray | None, rate: float) -> np.ndarray:
    """Backward of ``_site``: through the mask it recorded, or unchanged if it dropped none."""
    return dout if keep is None else dropout_backward(dout, keep, rate)


def _linear_backward(
    dout: np.ndarray, x: np.ndarray, params: Params, grads: Params, name: str
) -> np.ndarray:
    """``layers.linear_backward`` for the layer ``name``: stores its weight and bias gradients
    in ``grads`` and returns the gradient of its input."""
    dx, grads[name + ".weight"], grads[name + ".bias"] = linear_backward(
        dout, x, params[name + ".weight"]
    )
    return dx


def _layer_norm_backward(
    dout: np.ndarray, x: np.ndarray, params: Params, grads: Params, name: str
) -> np.ndarray:
    """``layers.layer_norm_backward`` for the layer ``name``, as ``_linear_backward``."""
    dx, grads[name + ".weight"], grads[name + ".bias"] = layer_norm_backward(
        dout, x, params[name + ".weight"]
    )
    return dx
