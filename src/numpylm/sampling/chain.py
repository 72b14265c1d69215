"""The sampling chain: from the model's logits to one chosen token per sequence.

The samplers run in this order (the order of Hugging Face ``transformers`` and the OpenAI API):

    logits -> penalties -> temperature -> top-k -> top-p -> min-p -> softmax -> draw

Penalties come first because they change the scores themselves; temperature then reshapes the
distribution, and the truncations (top-k, top-p, min-p) each look at the distribution left by the
step before, renormalised over its survivors. Each truncation keeps at least one token.

The draw uses one uniform number ``u`` per sequence per step: the chosen token is the first
whose cumulative probability exceeds ``u`` (inverse-CDF sampling). Because exactly one number is
drawn whatever the filters are, changing ``top_k`` changes which token ``u`` lands on but not
which ``u`` later steps get, and the same seed always gives the same text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .min_p import apply_min_p, check_min_p
from .penalties import (
    TokenHistory,
    apply_frequency_penalty,
    apply_presence_penalty,
    apply_repetition_penalty,
    check_openai_penalty,
    check_repetition_penalty,
)
from .softmax import check_logits, softmax
from .temperature import apply_temperature, check_temperature
from .top_k import apply_top_k, check_top_k
from .top_p import apply_top_p, check_top_p


@dataclass(frozen=True)
class Sampler:
    """A sampling configuration; the defaults sample from the model's own distribution.

    Attributes:
        temperature: ``>= 0``; 0 is greedy, 1 leaves the distribution as it is.
        top_k: keep the ``k >= 1`` most likely tokens (None: all).
        top_p: keep the nucleus of mass ``p`` in (0, 1] (None: all).
        min_p: keep tokens with ``p >= min_p * p_max``, ``min_p`` in [0, 1] (None: all).
        repetition_penalty: CTRL's penalty ``theta > 0`` on tokens in the context (1: none).
        frequency_penalty: OpenAI's per-occurrence penalty in [-2, 2] (0: none).
        presence_penalty: OpenAI's flat penalty for generated tokens, in [-2, 2] (0: none).

    Every value is checked when the sampler is made: a bad one is a ValueError (or TypeError)
    that names the parameter and its allowed range. The chain then trusts them: at every
    token it runs the samplers' ``apply_*`` forms, which do not check again.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def __post_init__(self) -> None:
        checked = {
            "temperature": check_temperature(self.temperature),
            "top_k": None if self.top_k is None else check_top_k(self.top_k),
            "top_p": None if self.top_p is None else check_top_p(self.top_p),
            "min_p": None if self.min_p is None else check_min_p(self.min_p),
            "repetition_penalty": check_repetition_penalty(self.repetition_penalty),
            "frequency_penalty": check_openai_penalty("frequency_penalty", self.frequency_penalty),
            "presence_penalty": check_openai_penalty("presence_penalty", self.presence_penalty),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # frozen: store the normalised values

    @property
    def uses_history(self) -> bool:
        """Whether a penalty is on, so the generation loop must keep a ``TokenHistory``."""
        return (
            self.repetition_penalty != 1
            or self.frequency_penalty != 0
            or self.presence_penalty != 0
        )

    def filter(self, logits: np.ndarray, history: TokenHistory | None = None) -> np.ndarray:
        """Apply the chain up to (not including) the softmax.

        Args:
            logits: (B, V) or (V,) raw scores from the model.
            history: the tokens seen so far, needed when a penalty is on.

        Returns:
            Logits of the same shape and dtype, ``-inf`` for removed tokens.
        """
        check_logits(logits)  # refuse NaN / +inf before any filter can hide them
        z = logits
        if self.uses_history:
            if history is None:
                raise ValueError("penalties need the tokens seen so far: pass history=")
            z = apply_repetition_penalty(z, history.seen, self.repetition_penalty)
            z = apply_frequency_penalty(z, history.counts, self.frequency_penalty)
            z = apply_presence_penalty(z, history.counts, self.presence_penalty)
        z = apply_temperature(z, self.temperature)
        if self.top_k is not None:
            z = apply_top_k(z, self.top_k)
        if self.top_p is not None:
            z = apply_top_p(z, self.top_p)
        if self.min_p is not None:
            z = apply_min_p(z, self.min_p)
        return z

    def probs(self, logits: np.ndarray, history: TokenHistory | None = None) -> np.ndarray:
        """The distribution tokens are drawn from: ``softmax(filter(logits))``, same shape."""
        z = self.filter(logits, history)
        # filter() checked the logits; when the chain changed nothing, that check holds here
        return softmax(z, check=z is not logits)

    def sample(
        self,
        logits: np.ndarray,
        rng: np.random.Generator,
        history: TokenHistory | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Choose one token per row.

        Args:
            logits: (B, V) raw scores.
            rng: the only source of randomness; exactly B uniform numbers are taken from it.
            history: the tokens seen so far, needed when a penalty is on.

        Returns:
            ``(ids, probs)``: (B,) int64 chosen tokens and the (B, V) distribution they were
            drawn from.
        """
        probs = self.probs(logits, history)
        # (B,) exactly one number per sequence, whatever the filters keep
        u = np.asarray(rng.random(probs.shape[0]))
        return draw(probs, u), probs


def draw(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: the first token whose cumulative probability exceeds ``u``.

    Picture the tokens laid end to end on [0, 1), each as long as its probability; ``u`` falls
    into one of them, and a token with probability 0 has no length, so it is never chosen.

    Args:
        probs: (B, V) probabilities, rows summing to 1 (up to rounding).
        u: (B,) uniform numbers in [0, 1).

    Returns:
        (B,) int64 token ids.
    """
    cdf = np.cumsum(probs, axis=-1)  # (B, V)
    x = u[:, None] * cdf[:, -1:]  # scale by the actual total, which rounding leaves near 1
    B, V = probs.shape
    ids = np.minimum((cdf <= x).sum(axis=-1), V - 1)  # (B,) how many tokens lie wholly below x
    # x can round up to the total itself when u is within 1e-16 of 1, and land past the last
    # token with probability > 0: take that token instead.
    past = probs[np.arange(B), ids] == 0
    if past.any():
        ids[past] = V - 1 - np.argmax(probs[past, ::-1] > 0, axis=-1)
    return ids.astype(np.int64)
