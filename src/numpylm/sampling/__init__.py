"""Samplers: how the next token is chosen from the model's scores.

A language model does not pick a token; it scores every token (logits). Sampling turns the
scores into a probability distribution and draws from it, which is why the same question gets
different answers. Each module here is one idea, a pure function from logits to logits that
removes tokens by setting their logit to ``-inf``:

- ``greedy``: keep only the best token.
- ``temperature``: sharpen (T < 1) or flatten (T > 1) the distribution; T = 0 is greedy.
- ``top_k``: keep the k most likely tokens.
- ``top_p``: keep the smallest set of most likely tokens holding probability p (nucleus).
- ``min_p``: keep tokens at least min_p times as likely as the best.
- ``penalties``: push down tokens that already appeared (repetition, frequency, presence).
- ``chain``: the ``Sampler`` that runs them in order and draws the token.
"""

from .chain import Sampler, draw
from .greedy import greedy
from .min_p import min_p
from .penalties import TokenHistory, frequency_penalty, presence_penalty, repetition_penalty
from .softmax import check_logits, log_softmax, softmax
from .temperature import temperature
from .top_k import top_k
from .top_p import top_p

__all__ = [
    "Sampler",
    "TokenHistory",
    "check_logits",
    "draw",
    "frequency_penalty",
    "greedy",
    "log_softmax",
    "min_p",
    "presence_penalty",
    "repetition_penalty",
    "softmax",
    "temperature",
    "top_k",
    "top_p",
]
