"""The KV cache changes how much work a step does, never the answer: logits from a cached
prefill followed by decode steps (or by chunks of any size) equal the logits of one uncached
forward pass over the whole sequence. Left-padded batches give each row what it gets alone."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from numpylm import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=97, n_ctx=40, n_layer=3, n_head=3, n_embd=24)
TOL = {np.float32: 1e-4, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]


def random_model(dtype: type, seed: int = 0) -> GPT:
    """A model whose every parameter is random (biases too), so that a cached key or value put
    at the wrong position, or a missing bias, would change the logits."""
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(p.shape) * 0.3 for name, p in GPT(CONFIG).params.items()}
    return GPT(CONFIG, dtype=dtype, params=params)


def chunked(model: GPT, ids: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Feed ``ids`` (B, T) through one cache in chunks of ``sizes``; return all (B, T, V) logits."""
    cache = model.new_cache(batch_size=ids.shape[0])
    out, start = [], 0
    for size in sizes:
        out.append(model(ids[:, start : start + size], cache=cache))
        start += size
        assert cache.length == start
    assert start == ids.shape[1]
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("seed", range(4))
def test_prefill_then_decode_equals_full_recompute(dtype: type, B: int, seed: int) -> None:
    model = random_model(dtype, seed)
    rng = np.random.default_rng(100 + seed)
    T = int(rng.integers(2, CONFIG.n_ctx + 1))
    prompt = int(rng.integers(1, T + 1))
    ids = rng.integers(0, CONFIG.vocab_size, size=(B, T))

    full = model(ids)
    cached = chunked(model, ids, [prompt] + [1] * (T - prompt))
    assert cached.dtype == full.dtype == np.dtype(dtype)
    assert np.abs(cached - full).max() <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_uneven_chunks_equal_full_recompute(dtype: type, seed: int) -> None:
    model = random_model(dtype, seed)
    rng = np.random.default_rng(200 + seed)
    ids = rng.integers(0, CONFIG.vocab_size, size=(2, CONFIG.n_ctx))  # fills the cache exactly
    cuts = np.sort(rng.choice(np.arange(1, CONFIG.n_ctx), size=5, replace=False))
    sizes = np.diff([0, *cuts, CONFIG.n_ctx]).tolist()  # e.g. [3, 11, 1, 7, 2, 16]
    assert np.abs(chunked(model, ids, sizes) - model(ids)).max() <= TOL[dtype]


def test_one_dimensional_ids_and_last_only_with_cache() -> None:
    model = random_model(np.float64)
    ids = np.random.default_rng(3).integers(0, CONFIG.vocab_size, size=12)
    full = model(ids)  # (T, V)
    cache = model.new_cache()
    last = model(ids[:7], cache=cache, last_only=True)  # (1, V)
    assert last.shape == (1, CONFIG.vocab_size)
    assert np.abs(last[0] - full[6]).max() <= TOL[np.float64]
    for t in range(7, 12):
        step = model(ids[t : t + 1], cache=cache)
        assert np.abs(step[0] - full[t]).max() <= TOL[np.float64]


def test_reset_cache_is_reusable() -> None:
    model = random_model(np.float64)
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, CONFIG.vocab_size, size=(2, 1, 9))
    cache = model.new_cache()
    chunks_a = [model(a[:, :4], cache=cache), model(a[:, 4:], cache=cache)]
    cache.reset()
    assert cache.length == 0
    got = np.concatenate([model(b[:, :5], cache=cache), model(b[:, 5:], cache=cache)], axis=1)
    assert np.abs(np.concatenate(chunks_a, axis=1) - model(a)).max() <= TOL[np.float64]
    assert np.abs(got - model(b)).max() <= TOL[np.float64]


def left_padded(rows: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack rows of different lengths, padded on the left: (B, T) ids and a (B, T) 0/1 mask."""
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :] = r
        mask[b, T - len(r) :] = 1
    return ids, mask


@pytest.mark.parametrize("dtype", DTYPES)
def test_left_padded_batch_matches_each_row_alone(dtype: type) -> None:
    model = random_model(dtype, seed=5)
    rng = np.random.default_rng(5)
    rows = [rng.integers(0, CONFIG.vocab_size, size=n) for n in (9, 3, 14, 1)]
    ids, mask = left_padded(rows, pad_id=int(rng.integers(CONFIG.vocab_size)))
    T = ids.shape[1]

    logits = model(ids, attention_mask=mask)
    for b, row in enumerate(rows):
        alone = model(row)  # (len(row), V)
        assert np.abs(logits[b, T - len(row) :] - alone).max() <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_left_padded_prefill_then_decode_matches_each_row_alone(dtype: type) -> None:
    """Prompts of different lengths in one batch, then a few decode steps each: every row's
    logits are those of the row's own prompt and new tokens, run alone without a cache."""
    model = random_model(dtype, seed=6)
    rng = np.random.default_rng(6)
    rows = [rng.integers(0, CONFIG.vocab_size, size=n) for n in (4, 11, 7)]
    ids, mask = left_padded(rows, pad_id=0)
    new = rng.integers(0, CONFIG.vocab_size, size=(len(rows), 6))  # the tokens "generated"

    cache = model.new_cache(batch_size=len(rows))
    prefill = model(ids, cache=cache, attention_mask=mask)
    steps = [model(new[:, t : t + 1], cache=cache) for t in range(new.shape[1])]
    decoded = np.concatenate(steps, axis=1)  # (B, 6, V)
    for b, row in enumerate(rows):
        alone = model(np.concatenate([row, new[b]]))  # (len(row) + 6, V)
        n = len(row)
        assert np.abs(prefill[b, -n:] - alone[:n]).max() <= TOL[dtype]
        assert np.abs(decoded[b] - alone[n:]).max() <= TOL[dtype]


@pytest.mark.parametrize("capacity", [None, 1, 7])
def test_the_cache_grows_as_the_text_does_and_keeps_what_it_held(capacity: int | None) -> None:
    """A cache starts small and doubles (never past n_ctx) when the tokens outgrow it; every
    growth keeps the cached keys and values, so decoding past each growth still equals one
    uncached pass. A model with a 150-token context grows a default cache 64 -> 128 -> 150."""
    config = GPTConfig(vocab_size=97, n_ctx=150, n_layer=2, n_head=2, n_embd=16)
    rng = np.random.default_rng(5)
    params = {name: rng.standard_normal(p.shape) * 0.3 for name, p in GPT(config).params.items()}
    model = GPT(config, dtype=np.float64, params=params)
    ids = rng.integers(0, 97, (2, 150))
    cache = model.new_cache(2, capacity=capacity)
    first = cache.capacity
    assert first == (64 if capacity is None else capacity)
    seen = [first]
    out = [model(ids[:, :5], cache=cache)]
    for t in range(5, 150):
        out.append(model(ids[:, t : t + 1], cache=cache))
        if cache.capacity != seen[-1]:
            seen.append(cache.capacity)
    assert seen[-1] == 150 and all(min(150, 2 * a) <= b <= 150 for a, b in pairwise(seen))
    if capacity is None:
        assert seen == [64, 128, 150]
    full = model(ids)
    np.testing.assert_allclose(np.concatenate(out, axis=1), full, rtol=0, atol=1e-10)
