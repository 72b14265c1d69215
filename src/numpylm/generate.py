"""Text generation, one token at a time.

A language model answers with a single token: the scores (logits) of every possible next token.
To write a sentence, pick one token, append it to the input, and ask again, until enough tokens
are written or the model emits ``<|endoftext|>``. The KV cache keeps the keys and values of what
was already read, so each step runs the model over the one new token only.
"""

from __future__ import annotations

import numpy as np

from .model import GPT


def generate(
    model: GPT,
    prompt_ids: np.ndarray | list[int],
    max_new_tokens: int,
    *,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """Greedy generation: append the most likely next token, ``max_new_tokens`` times or until
    ``eos_id``.

    Args:
        model: the language model.
        prompt_ids: (T,) token ids of the prompt (at least one).
        max_new_tokens: how many tokens to add at most.
        eos_id: stop after this token is produced (it is included in the result).
        use_cache: keep keys and values between steps (the same ids, much faster).

    Returns:
        (T + n,) int64 array: the prompt followed by the ``n <= max_new_tokens`` new ids.
    """
    ids = [int(i) for i in np.asarray(prompt_ids).reshape(-1)]
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    cache = model.new_cache() if use_cache else None
    new_input = ids
    for _ in range(max_new_tokens):
        if cache is None:
            logits = model(np.asarray(ids), last_only=True)  # the whole sequence, every step
        else:
            logits = model(np.asarray(new_input), cache=cache, last_only=True)  # new tokens only
        next_id = int(np.argmax(logits[-1]))
        ids.append(next_id)
        new_input = [next_id]
        if next_id == eos_id:
            break
    return np.asarray(ids, dtype=np.int64)
