"""Backends: the forward pass is written once, and the plain layers and the threads compute the
same logits. The inputs are large enough that the threads backend really splits its work (each
comparison checks that tasks ran in the pool's threads), so the comparison is of two
computations, not of the code with itself. Training's recording forward gives the same logits
too."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from numpylm import GPT, GPTConfig, generate_batch
from numpylm.layers import gelu, gelu_fast, layer_norm, layer_norm_fast
from numpylm.models import parallel
from numpylm.models.backends import AUTO, PLAIN, THREADS, get_backend
from numpylm.models.gpt2 import backward

CONFIG = GPTConfig(vocab_size=97, n_ctx=96, n_layer=2, n_head=4, n_embd=32)


@pytest.fixture(params=[2, 3], ids=lambda n: f"threads={n}")
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    before = parallel.get_threads()
    parallel.set_threads(request.param)
    yield request.param
    parallel.set_threads(before)


def model64() -> GPT:
    model = GPT(CONFIG, seed=5, dtype=np.float64)
    rng = np.random.default_rng(5)
    for p in model.params.values():  # no zero biases or unit gains: every parameter matters
        p += rng.standard_normal(p.shape) * 0.05
    return model


def test_the_backends_give_the_same_logits(threads: int, pool_threads: set[str]) -> None:
    model = model64()
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, size=(5, 90))  # 450 rows
    plain = model(ids, backend="plain")
    assert not pool_threads  # the plain backend never touches the pool
    fast = model(ids, backend=THREADS)
    assert any(name.startswith("numpylm") for name in pool_threads)  # the work was split
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-12)  # equal to rounding


def test_the_backends_agree_with_a_cache_and_padding(threads: int, pool_threads: set[str]) -> None:
    """A padded prefill then decoding steps, through the generation loop: the same greedy ids
    and the same logits for every backend."""
    prompts = [
        list(range(a, b)) for a, b in [(3, 70), (10, 50), (5, 8), (20, 87), (30, 60), (1, 68)]
    ]
    plain_model, fast_model = model64(), model64()
    plain_model.backend, fast_model.backend = PLAIN, THREADS
    plain = generate_batch(plain_model, prompts, 12, temperature=0)
    fast = generate_batch(fast_model, prompts, 12, temperature=0)
    assert any(name.startswith("numpylm") for name in pool_threads)
    assert [p.tolist() for p in plain] == [f.tolist() for f in fast]
    mask = np.zeros((6, 69), dtype=bool)
    ids = np.zeros((6, 69), dtype=np.int64)
    for b, p in enumerate(prompts):
        ids[b, 69 - len(p) :], mask[b, 69 - len(p) :] = p, True
    for backend in ("plain", "threads"):
        cache = plain_model.new_cache(6)
        first = plain_model(ids, cache=cache, attention_mask=mask, backend=backend)
        step = plain_model(ids[:, -1:], cache=cache, backend=backend)
        if backend == "plain":
            expected = (first, step)
        else:
            np.testing.assert_allclose(first[mask], expected[0][mask], rtol=0, atol=1e-12)
            np.testing.assert_allclose(step, expected[1], rtol=0, atol=1e-12)


def test_training_records_the_same_forward(threads: int) -> None:
    """Training's backend (``backward.recording``) runs the one forward pass, ``GPT.forward``,
    and gives the logits of the inference backends, with one tape entry per layer call."""
    model = model64()
    ids = np.random.default_rng(1).integers(0, CONFIG.vocab_size, size=(2, 80))
    tape = backward.Tape()
    logits = model(ids, backend=backward.recording(tape))
    assert len(tape.saved("attention")) == CONFIG.n_layer
    assert len(tape.saved("layer_norm")) == 2 * CONFIG.n_layer + 1
    for backend in ("plain", "threads"):
        np.testing.assert_allclose(logits, model(ids, backend=backend), rtol=0, atol=1e-12)


def test_the_backend_is_chosen_when_built_or_per_call() -> None:
    assert GPT(CONFIG).backend is AUTO and get_backend(None) is AUTO  # the default
    plain = GPT(CONFIG, backend="plain")
    assert plain.backend is PLAIN and get_backend(PLAIN) is PLAIN
    with pytest.raises(ValueError, match="backend must be one of"):
        GPT(CONFIG, backend="gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        plain(np.array([1, 2]), backend="fast")


def test_gelu_fast_is_gelu() -> None:
    """The speed rewrite computes the formula's numbers (float32 stays float32)."""
    x = np.random.default_rng(0).standard_normal((64, 48)) * 4
    np.testing.assert_allclose(gelu_fast(x), gelu(x), rtol=1e-14, atol=1e-15)
    x32 = x.astype(np.float32)
    assert gelu_fast(x32).dtype == np.float32 and gelu(x32).dtype == np.float32
    np.testing.assert_allclose(gelu_fast(x32), gelu(x32), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(
        gelu(np.array([0.0, 1.0, -1.0])), [0.0, 0.841192, -0.158808], atol=1e-6
    )


def test_the_default_runs_the_plain_layers_unless_a_pass_is_worth_splitting(
    threads: int, pool_threads: set[str]
) -> None:
    """``AUTO`` is ``PLAIN`` for decoding steps and short prompts (the layers a learner reads
    are the ones that run) and ``THREADS`` for a pass with enough tokens per thread."""
    enough = parallel._MIN_ROWS_PER_THREAD * threads
    assert get_backend("auto", rows=enough - 1) is PLAIN
    assert get_backend(None, rows=enough) is THREADS
    assert get_backend("plain", rows=enough) is PLAIN and get_backend(THREADS, rows=1) is THREADS
    model = model64()
    rng = np.random.default_rng(2)
    cache = model.new_cache(100)
    model(rng.integers(0, CONFIG.vocab_size, (100, 3)), cache=cache)  # 300 rows: split
    split_prefill = bool(pool_threads)
    pool_threads.clear()
    model(rng.integers(0, CONFIG.vocab_size, (100, 1)), cache=cache)  # 100 decoding rows
    assert split_prefill == (300 >= enough) and not pool_threads


def test_layer_norm_fast_is_layer_norm() -> None:
    """The speed rewrite computes the formula's numbers (float32 stays float32) and leaves its
    input alone."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 48)) * 3 + 1
    w, b = rng.standard_normal(48), rng.standard_normal(48)
    x0 = x.copy()
    np.testing.assert_allclose(
        layer_norm_fast(x, w, b), layer_norm(x, w, b), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_array_equal(x, x0)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    assert layer_norm_fast(x32, w32, b32).dtype == np.float32
    np.testing.assert_allclose(
        layer_norm_fast(x32, w32, b32), layer_norm(x, w, b), rtol=1e-5, atol=1e-5
    )
