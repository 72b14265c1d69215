"""Text generation, one token at a time: the loop for one prompt.

A language model answers with a single token. More precisely, it scores every possible next
token (the logits); a sampler turns the scores into probabilities and draws one. To write a
sentence, append the drawn token to the input and ask again, until enough tokens are written
or the model emits ``<|endoftext|>``:

    "Who was the first president?"            -> " The"
    "Who was the first president? The"        -> " first"
    "Who was the first president? The first"  -> " president"   ...

(the essay's illustration, not a model's output). Because the token is *drawn*, the same
question gets different answers; ``seed`` (or an explicit ``np.random.Generator``) makes a run
repeatable. ``generate`` below is that loop; the step it runs (the model on its context, with
the KV cache and the context window) is ``context.Context``. Built on the same step: batches of
prompts (``batching``), text in and text out as it is written (``streaming``), and the
step-by-step table (``tracing``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..checks import as_int, in_range, whole_number
from ..models.family import LanguageModel
from ..sampling import Sampler
from .context import Context

PromptIds = Sequence[int] | np.ndarray


def generate(
    model: LanguageModel,
    prompt_ids: PromptIds,
    max_new_tokens: int,
    *,
    eos_id: int | Sequence[int] | np.ndarray | None = None,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    use_cache: bool = True,
    **sampling: Any,
) -> np.ndarray:
    """Continue one prompt, a token at a time.

    Args:
        model: the language model.
        prompt_ids: (T,) token ids. Empty is allowed when ``eos_id`` is given: the model then
            starts from ``eos_id`` (GPT-2's ``<|endoftext|>`` also marks the start of a text).
        max_new_tokens: how many tokens to add at most, >= 0.
        eos_id: stop after this token is produced (it is included in the result), or after
            any of several (``eos_id=tokenizer.end_of_turn_ids``: a chat model's turn ends).
        seed: make the draws repeatable (the same seed gives the same ids).
        rng: or pass a ``np.random.Generator`` to draw from (not both).
        use_cache: keep keys and values between steps (the same ids, much faster).
        **sampling: how a token is chosen, the fields of ``numpylm.Sampler``: ``temperature``
            (0 is greedy), ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``,
            ``frequency_penalty`` and ``presence_penalty``; by default the model's own
            distribution.

    Returns:
        (T + n,) int64 array: the prompt followed by the ``n <= max_new_tokens`` new ids.
    """
    sampler, rng = Sampler(**sampling), make_rng(seed, rng)
    prompt = check_prompt(model, prompt_ids, eos_id)
    ends = end_ids(eos_id)
    start = prompt or [start_id(eos_id)]  # an empty prompt starts from <|endoftext|>
    steps = whole_number("max_new_tokens", max_new_tokens)
    context = Context(model, [start], use_cache, history=sampler.uses_history, max_new_tokens=steps)
    new: list[int] = []
    for _ in range(steps):
        logits = context.next_logits()  # 1. the model scores every possible next token: (1, V)
        token, _ = sampler.sample(logits, rng, context.history)  # 2. probabilities, one draw
        context.append(token)  # 3. the answer so far is part of the next question
        new.append(int(token[0]))
        if new[-1] in ends:  # 4. the model said it is done
            break
    return np.asarray(prompt + new, dtype=np.int64)


def make_rng(
    seed: int | None = None, rng: np.random.Generator | None = None
) -> np.random.Generator:
    """The random generator for a run: ``rng`` itself, a new one from ``seed``, or (neither)
    a fresh unpredictable one."""
    if rng is not None:
        if seed is not None:
            raise ValueError("give seed or rng, not both")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got "
                f"{type(rng).__name__}"
            )
        return rng
    return np.random.default_rng(None if seed is None else whole_number("seed", seed))


def check_prompt(
    model: LanguageModel, prompt_ids: PromptIds, eos_id: int | Sequence[int] | np.ndarray | None
) -> list[int]:
    """One prompt's token ids as a list, and ``eos_id`` (each of them) checked against the
    vocabulary."""
    arr = np.asarray(prompt_ids)
    if arr.ndim != 1:
        raise ValueError(
            f"prompt_ids must be a 1-D sequence of token ids, got shape {arr.shape}; for "
            "several prompts use generate_batch"
        )
    if arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"prompt_ids must be integer token ids, got dtype {arr.dtype}")
    V = model.config.vocab_size
    for end in end_ids(eos_id):
        in_range("eos_id", end, f"a token id in [0, {V - 1}]", end < V)
    return [int(i) for i in arr]


def end_ids(eos_id: int | Sequence[int] | np.ndarray | None) -> tuple[int, ...]:
    """``eos_id`` as a tuple of whole token ids >= 0: () for None, one id, or several (not an
    empty list). ``check_prompt`` checks them against the vocabulary."""
    if eos_id is None:
        return ()
    many: Any = eos_id.tolist() if isinstance(eos_id, np.ndarray) else eos_id
    if not isinstance(many, Sequence) or isinstance(many, str):
        many = [many]
    elif not many:
        raise ValueError("eos_id is an empty list: give at least one id, or None")
    ids = tuple(as_int("eos_id", i) for i in many)
    for i in ids:
        in_range("eos_id", i, "a token id (>= 0)", i >= 0)
    return ids


def start_id(eos_id: int | Sequence[int] | np.ndarray | None) -> int:
    """What an empty prompt starts from: the end-of-text token, GPT-2's convention (the first
    of several)."""
    if eos_id is None:
        raise ValueError(
            "prompt_ids is empty: give at least one token, or eos_id (GPT-2's <|endoftext|>, "
            "id 50256) to start from"
        )
    return end_ids(eos_id)[0]
