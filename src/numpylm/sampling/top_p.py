"""Top-p (nucleus sampling, Holtzman et al. 2019): keep the most likely tokens that together
hold probability ``p``.

Top-k keeps a fixed number of tokens, but the right number changes from step to step: after
"The capital of France is" one token deserves nearly all the mass, after "My favourite food is"
hundreds do. Top-p adapts: sort the tokens by probability, and keep the smallest prefix whose
mass reaches ``p`` (the token that crosses ``p`` is kept). Everything else gets ``-inf`` and the
softmax renormalises over the nucleus. ``p = 1`` keeps everything.
"""

from __future__ import annotations

import numpy as np

from ..checks import as_float, in_range
from .softmax import softmax


def check_top_p(p: object) -> float:
    """``p`` as a float, or an error saying top_p must be in (0, 1]."""
    value = as_float("top_p", p)
    return in_range("top_p", value, "a number in (0, 1]", 0 < value <= 1)


def top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability reaches ``p``.

    Tokens are ranked by logit, ties by lower id. A cumulative mass within float rounding of
    ``p`` counts as reaching it (so P = [0.4, 0.3, ...] with p = 0.7 keeps two tokens, as exact
    arithmetic would). The first token is always kept.

    Sorting all 50257 tokens of GPT-2 at every step would cost more than the rest of the
    sampling together, and the nucleus is usually a few hundred tokens at most (after top-k,
    at most k). So the search starts among the 64 most likely tokens (``np.argpartition``,
    O(V)) and widens fourfold until they hold mass ``p``; only those few are sorted.

    Args:
        logits: (..., V) scores; ``-inf`` marks tokens already removed.
        p: the probability mass to keep, in (0, 1].

    Returns:
        (..., V) logits of the same dtype, ``-inf`` outside the nucleus.
    """
    return apply_top_p(logits, check_top_p(p))


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """``top_p`` for a ``p`` already checked by ``check_top_p`` (the ``Sampler`` checks its
    values once, when it is made, not at every token)."""
    if p == 1:
        return logits
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)  # (N, V)
    probs = softmax(flat)
    cand = _most_likely(flat, probs, p)  # (N, m) ids, m << V usually
    # Rank by logit, not probability: two logits too close for float32 to tell their
    # probabilities apart still have an order, the one greedy decoding uses.
    vals = np.take_along_axis(flat, cand, axis=-1)  # (N, m), in id order
    order = np.argsort(-vals, axis=-1, kind="stable")  # descending; stable keeps lower id first
    ranked = np.take_along_axis(np.take_along_axis(probs, cand, axis=-1), order, axis=-1)
    before = np.cumsum(ranked, axis=-1) - ranked  # mass of the tokens ranked above each one
    slack = 32 * float(np.finfo(probs.dtype).eps)
    keep_ranked = before < p - slack  # still short of p before this token: it is needed
    keep_ranked[:, 0] = True  # the most likely token always survives
    keep = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(keep, np.take_along_axis(cand, order, axis=-1), keep_ranked, axis=-1)
    return np.where(keep.reshape(logits.shape), logits, -np.inf)


def _most_likely(logits: np.ndarray, probs: np.ndarray, p: float) -> np.ndarray:
    """(N, V) logits and probabilities -> (N, m) ids, in id order, of the m highest logits of
    each row, for the smallest m in 64, 256, 1024, ... such that the tokens *strictly* above the
    m-th already hold mass ``p`` in every row (then the nucleus lies among them, even if other
    tokens tie with the m-th), or m = the number of tokens still alive."""
    N, V = logits.shape
    alive = int(np.isfinite(logits).sum(axis=-1).max())  # after top-k: k
    m = min(64, alive)
    while m < V:
        cand = np.argpartition(-logits, m - 1, axis=-1)[:, :m]  # (N, m), unordered
        if m >= alive:
            return np.sort(cand, axis=-1)  # every token still alive is a candidate
        z = np.take_along_axis(logits, cand, axis=-1)
        above = z > z.min(axis=-1, keepdims=True)  # strictly above the m-th largest logit
        if np.all(np.where(above, np.take_along_axis(probs, cand, axis=-1), 0).sum(-1) >= p):
            return np.sort(cand, axis=-1)
        m = min(4 * m, alive)
    return np.broadcast_to(np.arange(V), (N, V))
