"""Generation for several sequences at once: the loop of ``generation.generate``, for B rows.

Prompts of different lengths are padded on the left and masked, with position ids that count
each row's own tokens (``padding``), so every row gets exactly what it would get alone (greedy
ids are identical). ``sample_steps`` is the B-row loop that streaming and the trace build on:
it yields what each step produced and leaves it to its caller to decide when a row has ended.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..checks import whole_number
from ..models.family import LanguageModel
from ..sampling import Sampler
from .context import Context, check_memory
from .loop import PromptIds, check_prompt, end_ids, make_rng, start_id

T = TypeVar("T")


@dataclass(frozen=True)
class Sampled:
    """What one step of ``sample_steps`` produced, for all B sequences.

    Attributes:
        ids: (B,) the chosen tokens.
        probs: (B, V) the distribution each token was drawn from (after the samplers).
        logits: (B, V) the model's raw scores.
    """

    ids: np.ndarray
    probs: np.ndarray
    logits: np.ndarray


def sample_steps(
    model: LanguageModel,
    contexts: Sequence[Sequence[int]],
    max_new_tokens: int,
    sampler: Sampler,
    rng: np.random.Generator,
    use_cache: bool = True,
    n_vocab: int | None = None,
) -> Iterator[Sampled]:
    """The generation loop for B sequences.

    Args:
        model: the language model.
        contexts: B non-empty lists of token ids.
        max_new_tokens: how many steps to run at most (stop iterating to end sooner).
        sampler: how a token is chosen from the logits.
        rng: where the random numbers come from (B uniforms per step).
        use_cache: read each token once (True) or re-read the whole context every step.
        n_vocab: if given, tokens with ids >= n_vocab (padding rows of a model whose vocabulary
            is larger than its tokenizer's) are never drawn.

    Yields:
        One ``Sampled`` per step. Every sequence gets a token at every step; it is the caller
        who decides that a sequence has ended (EOS, a stop string) and ignores the rest.
    """
    steps = whole_number("max_new_tokens", max_new_tokens)
    context = Context(
        model,
        contexts,
        use_cache,
        history=sampler.uses_history,
        n_vocab=n_vocab,
        max_new_tokens=steps,
    )
    for _ in range(steps):
        logits = context.next_logits()  # (B, V)
        ids, probs = sampler.sample(logits, rng, context.history)  # (B,), (B, V)
        context.append(ids)
        yield Sampled(ids, probs, logits)


def generate_batch(
    model: LanguageModel,
    prompts: Sequence[PromptIds],
    max_new_tokens: int,
    *,
    num_samples: int = 1,
    eos_id: int | Sequence[int] | np.ndarray | None = None,
    **options: Any,
) -> list[np.ndarray]:
    """Continue several prompts at once, as one batch.

    ``num_samples`` continues each prompt that many times (B = prompts x samples); the rows are
    ordered prompt by prompt. The options are those of ``generate`` (``seed``, ``rng``,
    ``use_cache`` and the fields of ``Sampler``).

    Returns:
        B int64 arrays, each a prompt followed by its new ids (up to and including ``eos_id``,
        or the first of several).
    """
    sampler, rng, use_cache = split_options(options)
    checked = [check_prompt(model, p, eos_id) for p in non_empty(prompts)]
    n = whole_number("num_samples", num_samples, 1)
    longest = max(map(len, checked)) + whole_number("max_new_tokens", max_new_tokens)
    check_memory(model, len(checked) * n, use_cache, sampler.uses_history, positions=longest)
    rows = [p for p in checked for _ in range(n)]
    new: list[list[int]] = [[] for _ in rows]
    done = np.zeros(len(rows), dtype=bool)
    contexts = [p or [start_id(eos_id)] for p in rows]
    ends = list(end_ids(eos_id))
    for step in sample_steps(model, contexts, max_new_tokens, sampler, rng, use_cache):
        for b in np.flatnonzero(~done):
            new[b].append(int(step.ids[b]))
        if ends:
            done |= np.isin(step.ids, ends)
        if done.all():
            break
    return [np.asarray(p + n, dtype=np.int64) for p, n in zip(rows, new, strict=True)]


def split_options(options: dict[str, Any]) -> tuple[Sampler, np.random.Generator, bool]:
    """The keyword options of a generation function -> the ``Sampler`` (made from the fields
    it has), the random generator (``seed`` or ``rng``) and ``use_cache``."""
    rest = dict(options)
    rng = make_rng(rest.pop("seed", None), rest.pop("rng", None))
    use_cache = bool(rest.pop("use_cache", True))
    return Sampler(**rest), rng, use_cache


def non_empty(prompts: Sequence[T]) -> list[T]:
    """``prompts`` as a list, refusing a single string and an empty list."""
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of prompts, got {prompts!r}")
    return list(prompts)
