"""Which keys each new token may attend to, and at which position it sits: the causal mask, and
the bookkeeping of batches padded on the left.

One sequence is simple: T new tokens after ``start`` cached ones sit at positions
``start .. start + T - 1`` and each sees the keys up to its own (the causal mask). A batch of
prompts of different lengths is padded on the left to one length, and then two more things
must hold for every row to get exactly what it would get alone:

- padding is never attended to (a key mask, True for real tokens), and
- padding does not advance the position ids: a row's positions count its own real tokens, so
  a short prompt starts at position 0 like it would alone.

The KV cache keeps a ``Padding`` between calls, so that the decoding steps after a padded
prefill continue each row's positions and keep hiding its padding. This module works on plain
arrays; ``model.py`` makes one call to ``positions_and_mask`` per forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layers import causal_mask


@dataclass(frozen=True)
class Padding:
    """The padding of a batch, over the ``L`` positions read so far.

    Attributes:
        key_mask: (B, L) bool, True where a position holds a real token, False for padding.
        n_real: (B,) int64, the number of real tokens of each row: where its positions go on.
    """

    key_mask: np.ndarray
    n_real: np.ndarray


def positions_and_mask(
    T: int, start: int, attention_mask: np.ndarray | None, padding: Padding | None
) -> tuple[np.ndarray, np.ndarray | None, Padding | None]:
    """Position ids and attention mask for ``T`` new tokens after ``start`` cached ones.

    Args:
        T: the number of new tokens.
        start: how many positions are already cached (0 without a cache).
        attention_mask: (B, T) bool, False for padding among the new tokens; None if none is.
        padding: the cache's ``Padding`` before this call, or None while there is none.

    Returns:
        ``(pos, allowed, padding)``: the position ids, (T,) shared by the batch or (B, T) per
        row; the mask of the keys each query may see, (T, L) or (B, 1, T, L), L = start + T,
        or None when every key is allowed (one new token, no padding); and the ``Padding``
        after these tokens (None while there is none), for the cache to keep.
    """
    L = start + T
    allowed = causal_mask(T, L) if T > 1 else None  # (T, L): no token sees its future
    if attention_mask is None and padding is None:
        return np.arange(start, L), allowed, None  # (T,)
    if padding is None:  # so far every row is real: `start` tokens each
        assert attention_mask is not None
        B = len(attention_mask)
        before, old = np.full(B, start, dtype=np.int64), np.ones((B, start), dtype=bool)
    else:
        B = len(padding.n_real)
        before, old = padding.n_real, padding.key_mask
    new = np.ones((B, T), dtype=bool) if attention_mask is None else attention_mask
    # A real token's position is the number of real tokens before it in its row; a padding
    # token gets the position of the next real one (its value never matters: it is hidden).
    pos = np.maximum(before[:, None] + np.cumsum(new, axis=1) - 1, 0)  # (B, T)
    key_mask = np.concatenate([old, new], axis=1)  # (B, L)
    hidden = key_mask[:, None, None, :]  # (B, 1, 1, L): no query sees padding
    allowed = hidden if allowed is None else allowed & hidden  # (B, 1, T, L)
    return pos, allowed, Padding(key_mask, before + new.sum(axis=1))


def left_pad(rows: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Token sequences of different lengths -> one (B, T) batch, padded on the left.

    Returns:
        ``(ids, mask)``: (B, T) int64 ids, ``pad_id`` before each shorter row's tokens, and the
        (B, T) bool mask, True for real tokens; None when no row needed padding.
    """
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=bool)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :] = r
        mask[b, T - len(r) :] = True
    return ids, None if mask.all() else mask
