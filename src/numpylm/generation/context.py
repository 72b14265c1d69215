"""The step under every generation loop: the sequences the model reads, and their KV cache.

A ``Context`` holds B token sequences. ``next_logits()`` runs the model and returns the (B, V)
scores of each sequence's next token; ``append(ids)`` puts the chosen tokens back in, so that
the answer so far is part of the next question. Three pieces of engineering live here, so the
loops above read like the story:

- the KV cache: after the first step, the model reads only the newest token of each sequence;
- left padding: sequences of different lengths are read as one batch (``padding.left_pad``),
  and sequences that start alike (the samples of one prompt) are read once (``KVCache.take``);
- the context window: GPT-2's positions are learned, one embedding per position, so the cached
  keys cannot be shifted along. Once a sequence outgrows ``n_ctx``, the model reads its last
  ``n_ctx`` tokens only, and every step rebuilds the cache from them (a full pass over the
  window per token: slower, but it never crashes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import memory
from ..models.cache import INITIAL_CAPACITY
from ..models.padding import left_pad
from ..sampling import TokenHistory

if TYPE_CHECKING:
    from ..models.family import LanguageModel


class Context:
    """B token sequences being continued, with their KV cache and, for the penalties, their
    ``TokenHistory``.

    Args:
        model: the language model.
        rows: B non-empty lists of token ids (prompts).
        use_cache: read each token once (True) or re-read the whole window every step.
        history: keep a ``TokenHistory`` (``self.history``) for the repetition penalties.
        n_vocab: if given, tokens with ids >= n_vocab (padding rows of a model whose vocabulary
            is larger than its tokenizer's) get logit ``-inf``: they are never drawn.
        max_new_tokens: if given, how many tokens will be appended at most: the memory check
            then counts the positions the rows can reach, not the model's whole context.
    """

    def __init__(
        self,
        model: LanguageModel,
        rows: Sequence[Sequence[int]],
        use_cache: bool = True,
        *,
        history: bool = False,
        n_vocab: int | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        longest = None if max_new_tokens is None else max(map(len, rows)) + max_new_tokens
        check_memory(model, len(rows), use_cache, history, positions=longest)
        self.model = model
        self.rows = [list(r) for r in rows]
        self.use_cache = use_cache
        self.n_vocab = n_vocab
        self.cache: Any = None  # a KVCache once the first window has been read
        self.newest = np.asarray([[row[-1]] for row in self.rows])  # (B, 1) the newest tokens
        self.history = TokenHistory(self.rows, model.config.vocab_size) if history else None

    def next_logits(self) -> np.ndarray:
        """(B, V) the next-token logits of every sequence."""
        n_ctx = self.model.config.n_ctx
        if self.cache is not None and self.cache.length < n_ctx:
            # The cache holds everything but the newest token: run the model on that one.
            newest = self.newest  # (B, 1)
            logits = self.model(newest, cache=self.cache, last_only=True)[:, -1]
        else:
            # Read the whole window: at the first step, at every step without a cache, and
            # when the cache is full (the window then moves on by one token). Rows with the
            # same window (the samples of one prompt) are read once and then copied.
            windows = [tuple(row[-n_ctx:]) for row in self.rows]
            unique = {w: i for i, w in enumerate(dict.fromkeys(windows))}  # window -> its row
            ids, mask = left_pad([list(w) for w in unique])  # (U, T), mask or None
            self.cache = self.model.new_cache(len(unique)) if self.use_cache else None
            logits = self.model(ids, cache=self.cache, attention_mask=mask, last_only=True)[:, -1]
            if len(unique) < len(windows):
                which = np.array([unique[w] for w in windows])  # (B,) each row's unique window
                logits = logits[which]  # (B, V)
                self.cache = None if self.cache is None else self.cache.take(which)
        if self.n_vocab is not None and self.n_vocab < logits.shape[-1]:
            logits[:, self.n_vocab :] = -np.inf
        return logits  # (B, V)

    def append(self, ids: np.ndarray) -> None:
        """Add one token to each sequence: ``ids`` is (B,)."""
        for row, i in zip(self.rows, ids, strict=True):
            row.append(int(i))
        self.newest = np.asarray(ids, dtype=np.int64).reshape(-1, 1)  # (B, 1), the next input
        if self.history is not None:
            self.history.add(ids)


def check_memory(
    model: LanguageModel,
    B: int,
    use_cache: bool = True,
    history: bool = False,
    *,
    positions: int | None = None,
) -> None:
    """Refuse B sequences that would not fit in the machine's free memory, before anything is
    allocated (``memory.generation_bytes``: the KV cache, the first window, the scores and the
    penalties' history).

    ``positions`` is the longest a sequence can get (its prompt and the new tokens); None
    counts the model's whole context. The KV cache grows as the text does, to at most twice
    what it holds (``KVCache.make_room``), so a short text on a long-context model (SmolLM2's
    8,192 positions) needs a small part of what the whole context would.
    """
    c, itemsize = model.config, np.dtype(getattr(model, "dtype", np.float32)).itemsize
    n_ctx = c.n_ctx
    if positions is not None:
        n_ctx = min(n_ctx, max(INITIAL_CAPACITY, 2 * positions))
    need = memory.generation_bytes(
        c.vocab_size,
        n_ctx,
        c.n_layer,
        c.n_head,
        c.n_embd,
        batch_size=B,
        itemsize=itemsize,
        use_cache=use_cache,
        history=history,
    )
    memory.fits(need, f"continuing {B} sequences", "ask for fewer at once (--num-samples)")
