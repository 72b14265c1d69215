"""The generation step's bookkeeping (``generation/context.py``): which tokens the model reads
at each step (the KV cache, left padding, the context window), the vocabulary cut, the
penalties' history and the memory check, on a tiny model.

Written for the survivors of a mutation run (docs/reliability.md, "Mutation testing").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from numpylm import GPT, GPTConfig, memory
from numpylm.generation import context as context_module
from numpylm.generation.context import Context

N_CTX = 6


def tiny(dtype: Any = np.float64) -> GPT:
    config = GPTConfig(vocab_size=50, n_ctx=N_CTX, n_layer=1, n_head=2, n_embd=8)
    return GPT(config, seed=0, dtype=dtype)


class Spy:
    """The model, with the shape of every batch it is asked to read recorded."""

    def __init__(self, model: GPT) -> None:
        self.model, self.config, self.read = model, model.config, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, ids: np.ndarray, **kw: Any) -> np.ndarray:
        self.read.append(ids.shape)
        return self.model(ids, **kw)


def alone(model: GPT, row: list[int]) -> np.ndarray:
    """The next-token logits of one sequence read alone, without a cache: the reference."""
    return model(np.asarray([row[-N_CTX:]]))[0, -1]


@pytest.mark.parametrize("use_cache", [True, False])
def test_every_step_gives_each_row_what_it_gets_alone(use_cache: bool) -> None:
    model = tiny()
    spy = Spy(model)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    ctx = Context(spy, prompts, use_cache=use_cache)  # type: ignore[arg-type]
    assert ctx.rows == prompts and ctx.rows[0] is not prompts[0]
    rng = np.random.default_rng(0)
    for _ in range(6):  # past the window: the longest row reaches 10 tokens
        logits = ctx.next_logits()
        assert logits.shape == (3, 50)
        for b, row in enumerate(ctx.rows):
            np.testing.assert_allclose(logits[b], alone(model, row), rtol=1e-9, atol=1e-12)
        ctx.append(rng.integers(0, 50, size=3))
    assert [len(r) for r in ctx.rows] == [9, 8, 10] and prompts[0] == [1, 2, 3]
    if use_cache:
        # the first window, then one token per step until the cache is full (6 positions),
        # then the last n_ctx tokens of each row, rebuilt every step
        assert spy.read == [(3, 4), (3, 1), (3, 1), (3, N_CTX), (3, N_CTX), (3, N_CTX)]
        assert ctx.cache is not None and ctx.cache.length == N_CTX
    else:
        assert spy.read == [(3, 4), (3, 5), (3, 6), (3, N_CTX), (3, N_CTX), (3, N_CTX)]
        assert ctx.cache is None


def test_the_cache_continues_after_a_full_window() -> None:
    model = tiny()
    spy = Spy(model)
    ctx = Context(spy, [[1, 2, 3, 4, 5]])  # type: ignore[arg-type]
    for token in (6, 7, 8):
        ctx.next_logits()
        ctx.append(np.array([token]))
    # 5 tokens, then 6 (cache length 6 = n_ctx: full), then the window moves on
    assert spy.read == [(1, 5), (1, 1), (1, N_CTX)]
    np.testing.assert_allclose(ctx.next_logits()[0], alone(model, ctx.rows[0]), rtol=1e-9)


@pytest.mark.parametrize("n_vocab", [None, 40, 50, 60])
def test_ids_past_the_tokenizers_vocabulary_are_never_drawn(n_vocab: int | None) -> None:
    model = tiny()
    logits = Context(model, [[1, 2]], n_vocab=n_vocab).next_logits()[0]
    expected = alone(model, [1, 2])
    if n_vocab == 40:
        assert np.isneginf(logits[40:]).all()
        np.testing.assert_allclose(logits[:40], expected[:40], rtol=1e-9)
    else:
        np.testing.assert_allclose(logits, expected, rtol=1e-9)


def test_the_history_follows_the_tokens() -> None:
    model = tiny()
    assert Context(model, [[1]]).history is None
    ctx = Context(model, [[1, 2, 2], [3]], history=True)
    assert ctx.history is not None
    ctx.append(np.array([3, 3]))
    # the prompt is seen (the repetition penalty); only generated tokens are counted
    np.testing.assert_array_equal(ctx.history.seen[:, :4], [[0, 1, 1, 1], [0, 0, 0, 1]])
    np.testing.assert_array_equal(ctx.history.counts[:, :4], [[0, 0, 0, 1], [0, 0, 0, 1]])
    assert ctx.rows == [[1, 2, 2, 3], [3, 3]] and all(type(i) is int for i in ctx.rows[0])
    with pytest.raises(ValueError):
        ctx.append(np.array([1]))  # one token per sequence, no fewer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("use_cache", "history"), [(True, False), (False, True)])
def test_the_memory_check_counts_what_this_context_allocates(
    monkeypatch: pytest.MonkeyPatch, dtype: Any, use_cache: bool, history: bool
) -> None:
    model = tiny(dtype)
    asked: list[tuple[int, str, str]] = []
    monkeypatch.setattr(memory, "fits", lambda *args: asked.append(args))
    Context(model, [[1], [2], [3]], use_cache=use_cache, history=history)
    need = memory.generation_bytes(
        50, N_CTX, 1, 2, 8, batch_size=3, itemsize=np.dtype(dtype).itemsize,
        use_cache=use_cache, history=history,
    )  # fmt: skip
    assert asked == [(need, "continuing 3 sequences", "ask for fewer at once (--num-samples)")]
    asked.clear()
    context_module.check_memory(model, 2)  # the defaults: a cache, no history
    need = memory.generation_bytes(
        50, N_CTX, 1, 2, 8, batch_size=2, itemsize=np.dtype(dtype).itemsize
    )
    assert asked == [(need, "continuing 2 sequences", "ask for fewer at once (--num-samples)")]


def test_a_model_without_a_dtype_counts_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bare:
        config = tiny().config

    asked: list[int] = []
    monkeypatch.setattr(memory, "fits", lambda need, *args: asked.append(need))

    context_module.check_memory(Bare(), 1)  # type: ignore[arg-type]
    assert asked == [memory.generation_bytes(50, N_CTX, 1, 2, 8, batch_size=1, itemsize=4)]
