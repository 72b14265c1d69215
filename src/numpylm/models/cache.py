"""The KV cache: what every model family keeps between generation steps.

Attention at a new position needs the keys and values of every earlier position. They do not
change once computed, so a model stores them here and each step computes one token's worth.
GPT-2 and the Llama family cache the same way; only the number of key/value heads differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import checks
from .padding import Padding


@dataclass
class KVCache:
    """The keys and values of every token the model has already read, per layer.

    Without a cache, each new token would mean running the whole sequence through the model
    again; with it, a step computes the new token's query, key and value only and attends over
    the stored ones.

    The arrays hold ``capacity`` positions and grow as the text does (``make_room``), doubling
    up to the model's context: SmolLM2's context is 8,192 tokens, and a cache for all of them
    from the start would be 360 MiB for a short answer (and 100 times that for 100 answers).

    Attributes:
        k: (n_layer, B, H, capacity, D) keys; positions ``[0, length)`` are filled.
        v: (n_layer, B, H, capacity, D) values, aligned with ``k``.
        length: number of positions filled so far; the next token goes at this index.
        padding: which cached positions are padding, for batches of prompts padded on the
            left (``numpylm.models.padding``); None while there is none.
    """

    k: np.ndarray
    v: np.ndarray
    length: int = 0
    padding: Padding | None = None

    def reset(self) -> None:
        """Forget every stored token (the arrays are kept for reuse)."""
        self.length, self.padding = 0, None

    @property
    def capacity(self) -> int:
        """How many positions the arrays hold now."""
        return int(self.k.shape[3])

    def take(self, rows: np.ndarray) -> KVCache:
        """A cache for ``len(rows)`` sequences, sequence ``b`` a copy of this cache's sequence
        ``rows[b]`` (its filled positions and padding): B samples of one prompt, read once."""
        k, v = (np.empty((a.shape[0], len(rows), *a.shape[2:]), a.dtype) for a in (self.k, self.v))
        k[:, :, :, : self.length] = self.k[:, rows, :, : self.length]
        v[:, :, :, : self.length] = self.v[:, rows, :, : self.length]
        pad = self.padding
        if pad is not None:
            pad = Padding(pad.key_mask[rows], pad.n_real[rows])
        return KVCache(k, v, self.length, pad)

    def make_room(self, end: int, limit: int) -> None:
        """Grow the arrays to hold positions ``[0, end)``: to twice their capacity, or to
        ``end`` if that is more, but never past ``limit`` (the model's context). The filled
        positions are copied over; a cache that has room already is left as it is."""
        if end <= self.capacity:
            return
        grown = min(limit, max(end, 2 * self.capacity))
        for name in ("k", "v"):
            old = getattr(self, name)
            new = np.empty((*old.shape[:3], grown, old.shape[4]), dtype=old.dtype)
            new[:, :, :, : self.length] = old[:, :, :, : self.length]
            setattr(self, name, new)


def new_cache(
    shape: tuple[int, int, int, int, int], dtype: np.dtype, capacity: int | None = None
) -> KVCache:
    """An empty cache for keys of ``shape`` (n_layer, B, H, n_ctx, D), holding ``capacity``
    positions to start with (default: 64, or n_ctx if that is less; it grows as needed)."""
    n_layer, B, H, n_ctx, D = shape
    if capacity is not None:
        checks.whole_number("capacity", capacity, 1)
    room = min(n_ctx, INITIAL_CAPACITY if capacity is None else capacity)
    # np.empty: memory is only touched (and counted) as the cache fills up.
    size = (n_layer, B, H, room, D)
    return KVCache(k=np.empty(size, dtype=dtype), v=np.empty(size, dtype=dtype))


INITIAL_CAPACITY = 64
"""Positions a new cache holds before it first grows."""
