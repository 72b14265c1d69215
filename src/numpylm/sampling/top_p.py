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

from ._checks import as_float, in_range
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

    Only tokens still alive need sorting: after top-k there are just k of them, so the rows are
    partitioned down to the survivors (``np.argpartition``, O(V)) before the sort.

    Args:
        logits: (..., V) scores; ``-inf`` marks tokens already removed.
        p: the probability mass to keep, in (0, 1].

    Returns:
        (..., V) logits of the same dtype, ``-inf`` outside the nucleus.
    """
    p = check_top_p(p)
    if p == 1:
        return logits
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)  # (N, V)
    m = max(int(np.isfinite(flat).sum(axis=-1).max()), 1)  # most survivors in any row
    if m < V:
        cand = np.sort(np.argpartition(-flat, m - 1, axis=-1)[:, :m], axis=-1)  # (N, m) ids
    else:
        cand = np.broadcast_to(np.arange(V), flat.shape)
    vals = np.take_along_axis(flat, cand, axis=-1)  # (N, m), in id order
    order = np.argsort(-vals, axis=-1, kind="stable")  # descending; stable keeps lower id first
    ids = np.take_along_axis(cand, order, axis=-1)  # (N, m) candidates, most likely first
    probs = softmax(np.take_along_axis(vals, order, axis=-1))  # removed tokens add nothing
    before = np.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each one
    slack = 32 * float(np.finfo(probs.dtype).eps)
    keep_ranked = before < p - slack  # still short of p before this token: it is needed
    keep_ranked[:, 0] = True  # the most likely token always survives
    keep = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(keep, ids, keep_ranked, axis=-1)
    return np.where(keep.reshape(logits.shape), logits, -np.inf)
