"""numpylm.models.parallel: the inference forward pass split over threads computes what the plain
layers compute (float64, to rounding), whatever the split.

Small inputs and one thread are not split (the plain layers run): those cases test the
fallback, and only the others compare two computations. Each case asserts which it is, from
the threads its tasks ran in, so a change to the split rule cannot silently turn every
comparison into one of the code with itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from numpylm import GPT, GPTConfig
from numpylm.layers import attention, causal_mask, gelu_fast, linear
from numpylm.models import parallel


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"threads={n}")
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    before = parallel.get_threads()
    parallel.set_threads(request.param)
    yield request.param
    parallel.set_threads(before)


@pytest.mark.parametrize("rows", [1, 5, 255, 256, 400])
def test_linear_and_gelu_equal_the_layers(threads: int, rows: int, pool_threads: set[str]) -> None:
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 24))
    w, b = rng.standard_normal((24, 40)), rng.standard_normal(40)
    x3 = x.reshape(1, rows, 24)
    np.testing.assert_allclose(parallel.linear(x3, w, b), linear(x3, w, b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(parallel.linear(x3, w), x3 @ w, rtol=0, atol=1e-12)
    # a strided weight, as the LM head's wte.T
    wt = np.asfortranarray(w)
    np.testing.assert_allclose(parallel.linear(x, wt, b), linear(x, w, b), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(parallel.gelu(x3), gelu_fast(x3))  # elementwise: exactly equal
    assert parallel.linear(x3.astype(np.float32), w.astype(np.float32)).dtype == np.float32
    split = threads > 1 and rows >= parallel._MIN_ROWS_PER_THREAD * threads
    assert bool(pool_threads) == split  # split, or the fallback


@pytest.mark.parametrize(("B", "T", "start"), [(1, 1, 0), (1, 40, 0), (2, 140, 9), (3, 130, 100)])
def test_blocked_attention_equals_the_layer(
    threads: int, B: int, T: int, start: int, pool_threads: set[str]
) -> None:
    """Prefill after a cache of ``start`` tokens, with the causal mask alone and with key
    padding too; one token with no mask, padding alone, or both (every ``allowed`` the model
    builds)."""
    H, D, L = 3, 8, start + T
    rng = np.random.default_rng(T)
    q = rng.standard_normal((B, H, T, D))
    k, v = rng.standard_normal((2, B, H, L, D))
    pad = np.ones((B, L), dtype=bool)
    pad[1:, : start + 3] = False  # rows after the first are left-padded
    causal, padding = causal_mask(T, L), pad[:, None, None, :]
    for allowed in [None, padding, causal & padding] if T == 1 else [causal, causal & padding]:
        expected = attention(q, k, v, allowed)[0]
        got = parallel.attention(q, k, v, allowed)
        # A query that may see no key at all (a padding token) has no meaningful output
        seen = np.ones((B, H, T, L), dtype=bool) if allowed is None else allowed
        real = np.broadcast_to(seen, (B, H, T, L)).any(-1)
        np.testing.assert_allclose(
            np.where(real[..., None], got, 0), np.where(real[..., None], expected, 0), atol=1e-12
        )
    assert bool(pool_threads) == (threads > 1 and B * T >= parallel._MIN_ROWS_PER_THREAD * threads)


def test_model_forward_is_the_same_with_any_number_of_threads() -> None:
    model = GPT(GPTConfig(vocab_size=97, n_ctx=96, n_layer=2, n_head=4, n_embd=32), seed=1,
                dtype=np.float64)  # fmt: skip
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 97, (4, 80))  # 320 rows: split on 2 threads
    mask = np.ones((4, 80), dtype=int)
    mask[1, :7] = 0
    before = parallel.get_threads()
    results = []
    try:
        for n in (1, 2, 4):
            parallel.set_threads(n)
            cache = model.new_cache(4)
            prefill = model(ids[:, :60], cache=cache, attention_mask=mask[:, :60])
            step = model(ids[:, 60:], cache=cache, attention_mask=mask[:, 60:])
            full = model(ids, attention_mask=mask)
            results.append((prefill, step, full, model.loss(ids[:, :-1], ids[:, 1:])))
    finally:
        parallel.set_threads(before)
    real = mask.astype(bool)  # logits at padding positions mean nothing: not compared
    for prefill, step, full, loss in results[1:]:
        np.testing.assert_allclose(prefill[real[:, :60]], results[0][0][real[:, :60]], atol=1e-10)
        np.testing.assert_allclose(step[real[:, 60:]], results[0][1][real[:, 60:]], atol=1e-10)
        np.testing.assert_allclose(full[real], results[0][2][real], rtol=0, atol=1e-10)
        assert loss == pytest.approx(results[0][3], abs=1e-12)


def test_run_does_every_task_raises_their_errors_and_nests(threads: int) -> None:
    done: list[int] = []
    lock = threading.Lock()

    def task(i: int) -> None:
        with lock:
            done.append(i)

    def nested() -> None:  # a task that splits its own work must not wait on itself
        parallel.run([lambda: task(100), lambda: task(101)])

    parallel.run([lambda i=i: task(i) for i in range(7)] + [nested])
    assert sorted(done) == [*range(7), 100, 101]

    def boom() -> None:
        raise RuntimeError("task failed")

    with pytest.raises(RuntimeError, match="task failed"):
        parallel.run([lambda: None, boom])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_set_threads_refuses_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        parallel.set_threads(bad)  # type: ignore[arg-type]


def test_threads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMPYLM_THREADS", "3")
    assert parallel._default_threads() == 3
    monkeypatch.setenv("NUMPYLM_THREADS", "many")
    with pytest.raises(ValueError, match="NUMPYLM_THREADS must be a positive integer"):
        parallel._default_threads()
