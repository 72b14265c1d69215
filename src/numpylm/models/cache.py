"""The KV cache: what every model family keeps between generation steps.

Attention at a new position needs the keys and values of every earlier position. They do not
change once computed, so a model stores them here and each step computes one token's worth.
GPT-2 and the Llama family cache the same way; only the number of key/value heads differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .padding import Padding


@dataclass
class KVCache:
    """The keys and values of every token the model has already read, per layer.

    Without a cache, each new token would mean running the whole sequence through the model
    again; with it, a step computes the new token's query, key and value only and attends over
    the stored ones. The arrays are allocated once, for the full context.

    Attributes:
        k: (n_layer, B, H, n_ctx, D) keys; positions ``[0, length)`` are filled.
        v: (n_layer, B, H, n_ctx, D) values, aligned with ``k``.
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
