"""Penalties: make the model less likely to repeat itself.

Language models, greedy ones especially, fall into loops ("I don't know. I don't know. I don't
know."). Penalties lower the scores of tokens that already appeared, before any other sampler
runs. Two conventions exist, and both are here:

- Repetition penalty (CTRL, Keskar et al. 2019; Hugging Face's ``repetition_penalty``): every
  token already in the context, the prompt included, once however often it appeared, has its
  logit divided by ``theta`` if positive and multiplied by ``theta`` if negative, so it always
  moves down for ``theta > 1`` (and up for ``theta < 1``).
- Frequency and presence penalties (the OpenAI API's): subtract
  ``count * frequency_penalty + (count > 0) * presence_penalty`` from each logit, where
  ``count`` is how many times the token was already *generated* (the prompt does not count,
  as in the OpenAI API). Frequency grows with every repeat; presence is a flat charge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..checks import as_float, float32_factor, in_range


def check_repetition_penalty(theta: object) -> float:
    """``theta`` as a float, or an error saying repetition_penalty must be a number > 0 that
    float32 can divide by (``checks.float32_factor``)."""
    return float32_factor("repetition_penalty", theta, "1 means no penalty")


def check_openai_penalty(name: str, alpha: object) -> float:
    """A frequency or presence penalty as a float, or an error saying it must be in [-2, 2]
    (the OpenAI API's range)."""
    value = as_float(name, alpha)
    return in_range(name, value, "a number in [-2, 2] (0 means no penalty)", -2 <= value <= 2)


def repetition_penalty(logits: np.ndarray, seen: np.ndarray, theta: float) -> np.ndarray:
    """CTRL's repetition penalty: ``z / theta`` if ``z > 0`` else ``z * theta``, for seen tokens.

    Args:
        logits: (..., V) scores.
        seen: (..., V) bool, True for tokens already in the context (prompt included).
        theta: the penalty, > 0; 1 changes nothing.

    Returns:
        (..., V) logits of the same dtype.
    """
    return apply_repetition_penalty(logits, seen, check_repetition_penalty(theta))


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, theta: float) -> np.ndarray:
    """``repetition_penalty`` for a ``theta`` already checked (the ``Sampler`` checks its
    values once, when it is made, not at every token)."""
    if theta == 1:
        return logits
    with np.errstate(over="ignore"):
        penalised = np.where(logits > 0, logits / theta, logits * theta)
    out = np.where(seen, penalised, logits)
    rows = (np.isposinf(out) & np.isfinite(logits)).any(axis=-1)
    if rows.any():  # a tiny theta carried seen scores past float32's range: see _overflowed
        out[rows] = _overflowed(logits[rows], out[rows], theta)
    return out


def _overflowed(logits: np.ndarray, penalised: np.ndarray, theta: float) -> np.ndarray:
    """(R, V) rows where some ``z / theta`` passed float32's largest number: the others are
    smaller by more than float32 can tell apart up there (2**104 apart), so they get
    probability 0 (-inf), and the overflowed tokens keep their differences, shifted so the
    largest is 0: ``(z - z_max) / theta``, which softmax reads as ``z / theta``."""
    over = np.isposinf(penalised) & np.isfinite(logits)
    top = np.max(np.where(over, logits, -np.inf), axis=-1, keepdims=True)  # (R, 1)
    with np.errstate(over="ignore"):
        return np.where(over, (logits - top) / theta, -np.inf).astype(logits.dtype)


def frequency_penalty(logits: np.ndarray, counts: np.ndarray, alpha: float) -> np.ndarray:
    """OpenAI's frequency penalty: ``z - count * alpha``.

    Args:
        logits: (..., V) scores.
        counts: (..., V) integers, how often each token was generated so far.
        alpha: the penalty per occurrence, in [-2, 2].
    """
    return apply_frequency_penalty(logits, counts, check_openai_penalty("frequency_penalty", alpha))


def apply_frequency_penalty(logits: np.ndarray, counts: np.ndarray, alpha: float) -> np.ndarray:
    """``frequency_penalty`` for an ``alpha`` already checked (by the ``Sampler``)."""
    if alpha == 0:
        return logits
    return logits - counts.astype(logits.dtype) * alpha  # cast first: int * float is float64


def presence_penalty(logits: np.ndarray, counts: np.ndarray, alpha: float) -> np.ndarray:
    """OpenAI's presence penalty: ``z - (count > 0) * alpha``.

    Args:
        logits: (..., V) scores.
        counts: (..., V) integers, how often each token was generated so far.
        alpha: the penalty for having appeared at all, in [-2, 2].
    """
    return apply_presence_penalty(logits, counts, check_openai_penalty("presence_penalty", alpha))


def apply_presence_penalty(logits: np.ndarray, counts: np.ndarray, alpha: float) -> np.ndarray:
    """``presence_penalty`` for an ``alpha`` already checked (by the ``Sampler``)."""
    if alpha == 0:
        return logits
    return logits - (counts > 0).astype(logits.dtype) * alpha


class TokenHistory:
    """What the penalties need to remember about each sequence of a batch.

    Attributes:
        seen: (B, V) bool, True for every token in the context so far (prompt included).
        counts: (B, V) int32, how many times each token was generated (prompt excluded).
    """

    def __init__(self, prompts: Sequence[Sequence[int] | np.ndarray], vocab_size: int) -> None:
        B = len(prompts)
        self.seen = np.zeros((B, vocab_size), dtype=bool)
        self.counts = np.zeros((B, vocab_size), dtype=np.int32)
        for b, ids in enumerate(prompts):
            self.seen[b, np.asarray(ids, dtype=np.int64)] = True

    def add(self, ids: np.ndarray) -> None:
        """Record one new token per sequence: ``ids`` is (B,)."""
        rows = np.arange(len(ids))
        self.counts[rows, ids] += 1
        self.seen[rows, ids] = True
