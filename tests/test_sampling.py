"""The samplers, one by one and chained: exact vectors, refused values, and properties.

The expected numbers are worked out by hand from each sampler's formula (P = [0.1, 0.2, 0.3,
0.4] throughout, as in issue 3), never by calling the code under test a second way.
"""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from numpylm.sampling import (
    Sampler,
    TokenHistory,
    draw,
    frequency_penalty,
    greedy,
    log_softmax,
    min_p,
    presence_penalty,
    repetition_penalty,
    softmax,
    temperature,
    top_k,
    top_p,
)

P = [0.1, 0.2, 0.3, 0.4]
DTYPES = [np.float32, np.float64]


def logits_of(probs: list[float], dtype: type = np.float32) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64)).astype(dtype)


# ------------------------------------------------------------------------------------------------
# Exact vectors


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_k_3_renormalises_over_the_three_largest(dtype: type) -> None:
    out = softmax(top_k(logits_of(P, dtype), 3))
    np.testing.assert_allclose(out, [0, 2 / 9, 3 / 9, 4 / 9], rtol=1e-6)  # 0.222, 0.333, 0.444
    assert out[0] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_p_07_keeps_the_token_that_crosses_p(dtype: type) -> None:
    # 0.4 alone is short of 0.7; 0.4 + 0.3 reaches it, so exactly two tokens survive.
    out = softmax(top_p(logits_of(P, dtype), 0.7))
    np.testing.assert_allclose(out, [0, 0, 3 / 7, 4 / 7], rtol=1e-6)  # 0.428.., 0.571..


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_p_includes_the_crossing_token(dtype: type) -> None:
    out = softmax(top_p(logits_of(P, dtype), 0.75))  # 0.4 + 0.3 = 0.7 < 0.75: 0.2 is needed too
    np.testing.assert_allclose(out, [0, 2 / 9, 3 / 9, 4 / 9], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_min_p_026_keeps_three_tokens(dtype: type) -> None:
    # threshold 0.26 * 0.4 = 0.104: 0.1 falls below it, 0.2 / 0.3 / 0.4 stay.
    out = softmax(min_p(logits_of(P, dtype), 0.26))
    np.testing.assert_allclose(out, [0, 2 / 9, 3 / 9, 4 / 9], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_min_p_is_inclusive(dtype: type) -> None:
    # 0.2 is exactly 0.5 * 0.4: it stays.
    out = softmax(min_p(logits_of([0.1, 0.2, 0.3, 0.4], dtype), 0.5))
    np.testing.assert_allclose(out, [0, 2 / 9, 3 / 9, 4 / 9], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_repetition_penalty_divides_positive_and_multiplies_negative(dtype: type) -> None:
    z = np.array([2.0, -2.0, 2.0, -2.0], dtype=dtype)
    seen = np.array([True, True, False, False])
    out = repetition_penalty(z, seen, 2.0)
    np.testing.assert_array_equal(out, [1.0, -4.0, 2.0, -2.0])  # unseen tokens untouched
    assert out.dtype == dtype


def test_repetition_penalty_counts_a_token_once() -> None:
    history = TokenHistory([[1, 1, 1, 2]], vocab_size=4)  # token 1 three times in the prompt
    out = Sampler(repetition_penalty=2.0).filter(np.array([[4.0, 4.0, 4.0, 4.0]]), history)
    np.testing.assert_array_equal(out, [[4.0, 2.0, 2.0, 4.0]])


def test_frequency_and_presence_penalties_follow_openai() -> None:
    z = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    counts = np.array([0, 1, 3])
    f = frequency_penalty(z, counts, 0.5)
    np.testing.assert_allclose(f, [1.0, 0.5, -0.5])  # 1 - count * 0.5
    p = presence_penalty(z, counts, 0.25)
    np.testing.assert_allclose(p, [1.0, 0.75, 0.75])  # 1 - (count > 0) * 0.25
    assert f.dtype == p.dtype == np.float32  # int counts must not turn logits into float64


def test_frequency_penalty_ignores_the_prompt() -> None:
    history = TokenHistory([[0, 0, 0]], vocab_size=3)
    history.add(np.array([1]))
    history.add(np.array([1]))
    out = Sampler(frequency_penalty=1.0, presence_penalty=0.5).filter(np.zeros((1, 3)), history)
    np.testing.assert_allclose(out, [[0.0, -2.5, 0.0]])  # only the generated token 1 pays


@pytest.mark.parametrize("dtype", DTYPES)
def test_temperature_zero_is_greedy(dtype: type) -> None:
    z = logits_of(P, dtype)
    out = softmax(temperature(z, 0))
    np.testing.assert_array_equal(out, [0, 0, 0, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_temperature_divides(dtype: type) -> None:
    z = np.array([1.0, 2.0, 4.0], dtype=dtype)
    out = temperature(z, 2.0)
    np.testing.assert_array_equal(out, [0.5, 1.0, 2.0])
    assert out.dtype == dtype
    # T = 0.5 squares the probabilities before renormalising.
    q = np.asarray(P) ** 2
    np.testing.assert_allclose(softmax(temperature(logits_of(P, dtype), 0.5)), q / q.sum(), 1e-6)


def test_greedy_and_top_k_break_ties_by_lower_id() -> None:
    z = np.array([1.0, 3.0, 3.0, 3.0, 0.0])
    assert np.flatnonzero(np.isfinite(greedy(z))).tolist() == [1]
    assert np.flatnonzero(np.isfinite(top_k(z, 2))).tolist() == [1, 2]
    assert np.flatnonzero(np.isfinite(top_p(z, 0.01))).tolist() == [1]


def test_top_k_larger_than_the_vocabulary_keeps_everything() -> None:
    z = logits_of(P)
    np.testing.assert_array_equal(top_k(z, 100), z)


def test_top_p_one_and_min_p_zero_change_nothing() -> None:
    z = logits_of(P)
    np.testing.assert_array_equal(top_p(z, 1.0), z)
    np.testing.assert_array_equal(min_p(z, 0.0), z)


def test_top_p_rows_with_different_survivors() -> None:
    # After top-k, row 0 has 2 survivors and row 1 has 4: each row must match its own nucleus.
    z = np.stack([logits_of(P), logits_of([0.4, 0.3, 0.2, 0.1])])
    z[0, :2] = -np.inf
    out = softmax(top_p(z, 0.5))
    np.testing.assert_allclose(out[0], [0, 0, 0, 1], atol=1e-7)  # 0.4/0.7 = 0.57 >= 0.5
    np.testing.assert_allclose(out[1], [4 / 7, 3 / 7, 0, 0], rtol=1e-6)


def test_the_chain_runs_in_the_documented_order() -> None:
    # top-k 2 leaves [0.3, 0.4] -> renormalised [0.43, 0.57]; then top-p 0.5 needs 0.57 only.
    # (top-p first would keep 0.4 and 0.3 of the original, and top-k 2 would keep both.)
    out = Sampler(top_k=2, top_p=0.5).probs(logits_of(P))
    np.testing.assert_allclose(out, [0, 0, 0, 1], atol=1e-7)
    # Temperature comes before min-p: at T = 2 the ratio 0.1/0.4 = 0.25 becomes 0.5.
    kept = Sampler(temperature=2.0, min_p=0.45).probs(logits_of(P)) > 0
    assert kept.tolist() == [True, True, True, True]
    kept = Sampler(min_p=0.45).probs(logits_of(P)) > 0
    assert kept.tolist() == [False, True, True, True]
    # Penalties come before temperature 0: greedy picks the best *penalised* token.
    history = TokenHistory([[3]], vocab_size=4)
    out = Sampler(temperature=0, repetition_penalty=2.0).probs(logits_of(P)[None], history)
    np.testing.assert_array_equal(out, [[0, 0, 1, 0]])  # log 0.4 * 2 < log 0.3


def test_softmax_is_stable_and_refuses_empty_rows() -> None:
    out = softmax(np.array([1000.0, 1001.0], dtype=np.float32))
    np.testing.assert_allclose(out, [1 / (1 + math.e), math.e / (1 + math.e)], rtol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.exp(log_softmax(np.array([1000.0, 1001.0]))), out, rtol=1e-6)
    with pytest.raises(ValueError, match="every token of a row was removed"):
        softmax(np.array([[0.0, 1.0], [-np.inf, -np.inf]]))
    with pytest.raises(ValueError, match="NaN"):
        softmax(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="NaN"):
        Sampler(top_k=1).probs(np.array([np.nan, 0.0]))  # not hidden by a filter


def test_log_softmax_keeps_tiny_probabilities() -> None:
    out = log_softmax(np.array([0.0, -1000.0]))
    np.testing.assert_allclose(out, [0.0, -1000.0], atol=1e-12)  # log(softmax) would be -inf


def test_draw_follows_the_cdf_and_skips_zero_probabilities() -> None:
    probs = np.array([[0.25, 0.0, 0.5, 0.25, 0.0]] * 5)
    u = np.array([0.0, 0.2499, 0.25, 0.75, 1 - 1e-16])
    assert draw(probs, u).tolist() == [0, 0, 2, 3, 3]
    assert draw(np.array([[0.0, 1.0, 0.0]]), np.array([0.0])).tolist() == [1]


def test_one_uniform_per_sequence_whatever_the_filters() -> None:
    z = np.tile(logits_of(P), (3, 1))
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    Sampler(top_k=1).sample(z, a)
    Sampler(top_p=0.9, min_p=0.1, temperature=0.7).sample(z, b)
    assert a.random() == b.random()  # both took exactly 3 numbers
    c, d = np.random.default_rng(1), np.random.default_rng(1)
    Sampler(temperature=0).sample(z, c)  # greedy takes its 3 numbers too
    d.random(3)
    assert c.random() == d.random()


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_chain_keeps_the_dtype(dtype: type) -> None:
    history = TokenHistory([[0]], vocab_size=4)
    history.add(np.array([1]))
    s = Sampler(
        temperature=0.7,
        top_k=3,
        top_p=0.9,
        min_p=0.05,
        repetition_penalty=1.3,
        frequency_penalty=0.5,
        presence_penalty=0.5,
    )
    probs = s.probs(logits_of(P, dtype)[None], history)
    assert probs.dtype == dtype
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-6)


# ------------------------------------------------------------------------------------------------
# Refused values: each names the parameter and its allowed range.

BAD = [
    (
        {"temperature": -0.1},
        ValueError,
        r"temperature must be 0 \(greedy\) or a number from 1.18e-38",
    ),
    (
        {"temperature": math.nan},
        ValueError,
        r"temperature must be 0 \(greedy\) or a number from 1.18e-38",
    ),
    (
        {"temperature": math.inf},
        ValueError,
        r"temperature must be 0 \(greedy\) or a number from 1.18e-38",
    ),
    ({"temperature": "hot"}, TypeError, "temperature must be a number"),
    ({"top_k": 0}, ValueError, "top_k must be a whole number >= 1"),
    ({"top_k": -3}, ValueError, "top_k must be a whole number >= 1"),
    ({"top_k": 2.5}, TypeError, "top_k must be a whole number"),
    ({"top_k": True}, TypeError, "top_k must be a whole number"),
    ({"top_p": 0.0}, ValueError, r"top_p must be a number in \(0, 1\]"),
    ({"top_p": 1.5}, ValueError, r"top_p must be a number in \(0, 1\]"),
    ({"top_p": -0.2}, ValueError, r"top_p must be a number in \(0, 1\]"),
    ({"top_p": math.nan}, ValueError, r"top_p must be a number in \(0, 1\]"),
    ({"min_p": -0.01}, ValueError, r"min_p must be a number in \[0, 1\]"),
    ({"min_p": 1.01}, ValueError, r"min_p must be a number in \[0, 1\]"),
    ({"repetition_penalty": 0.0}, ValueError, "repetition_penalty must be a number from 1.18e-38"),
    ({"repetition_penalty": -1.2}, ValueError, "repetition_penalty must be a number from 1.18e-38"),
    ({"frequency_penalty": 2.5}, ValueError, r"frequency_penalty must be a number in \[-2, 2\]"),
    ({"presence_penalty": -2.01}, ValueError, r"presence_penalty must be a number in \[-2, 2\]"),
    ({"presence_penalty": None}, TypeError, "presence_penalty must be a number"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD)
def test_bad_values_are_refused_with_the_range(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Sampler(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda z: temperature(z, -1), "temperature"),
        (lambda z: top_k(z, 0), "top_k"),
        (lambda z: top_p(z, 2), "top_p"),
        (lambda z: min_p(z, 2), "min_p"),
        (lambda z: repetition_penalty(z, z > 0, 0), "repetition_penalty"),
        (lambda z: frequency_penalty(z, z > 0, 3), "frequency_penalty"),
        (lambda z: presence_penalty(z, z > 0, 3), "presence_penalty"),
    ],
)
def test_the_functions_check_their_values_too(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(logits_of(P))  # type: ignore[operator]


# ------------------------------------------------------------------------------------------------
# Properties


def logits_rows(dtype: type = np.float64) -> st.SearchStrategy[np.ndarray]:
    """(B, V) logits with some tokens already removed (-inf), never a whole row."""

    def build(arr: np.ndarray, removed: np.ndarray) -> np.ndarray:
        out = arr.copy()
        removed = removed & (np.arange(arr.shape[1]) != np.argmax(arr, axis=1)[:, None])
        out[removed] = -np.inf
        return out

    shapes = st.tuples(st.integers(1, 4), st.integers(1, 40))
    return shapes.flatmap(
        lambda shape: st.builds(
            build,
            hnp.arrays(
                dtype,
                shape,
                elements=st.floats(-30, 30, allow_nan=False, width=32),
            ),
            hnp.arrays(bool, shape),
        )
    )


samplers = st.builds(
    Sampler,
    temperature=st.one_of(st.just(0.0), st.floats(0.05, 5.0)),
    top_k=st.one_of(st.none(), st.integers(1, 50)),
    top_p=st.one_of(st.none(), st.floats(1e-6, 1.0)),
    min_p=st.one_of(st.none(), st.floats(0.0, 1.0)),
    repetition_penalty=st.floats(0.5, 2.0),
    frequency_penalty=st.floats(-2.0, 2.0),
    presence_penalty=st.floats(-2.0, 2.0),
)


@settings(max_examples=300, deadline=None)
@given(
    z=logits_rows(),
    sampler=samplers,
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(DTYPES),
)
def test_any_valid_chain_draws_a_token_it_kept(
    z: np.ndarray, sampler: Sampler, seed: int, dtype: type
) -> None:
    z = z.astype(dtype)
    B, V = z.shape
    rng = np.random.default_rng(seed)
    history = TokenHistory([rng.integers(0, V, size=3) for _ in range(B)], V)
    history.add(rng.integers(0, V, size=B))
    ids, probs = sampler.sample(z, rng, history)
    assert ids.shape == (B,)
    assert np.all(probs[np.arange(B), ids] > 0)
    assert np.all(np.isfinite(z[np.arange(B), ids]))  # never a token removed before the chain
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    alive = (probs > 0).sum(axis=1)
    assert np.all(alive >= 1)
    if sampler.top_k is not None:
        assert np.all(alive <= sampler.top_k)
    if sampler.temperature == 0:
        assert np.all(alive == 1)


@settings(max_examples=200, deadline=None)
@given(z=logits_rows(), u=st.floats(0.0, 1.0, exclude_max=True))
@example(z=np.array([[-3.65e-21, 0.0]]), u=0.0)  # equal probabilities, different logits
def test_top_k_1_tiny_top_p_and_temperature_0_all_equal_greedy(z: np.ndarray, u: float) -> None:
    expected = np.argmax(z, axis=1)  # NumPy's argmax: the lowest id among ties
    uu = np.full(z.shape[0], u)
    for sampler in [Sampler(top_k=1), Sampler(top_p=1e-9), Sampler(temperature=0)]:
        assert draw(sampler.probs(z), uu).tolist() == expected.tolist()


@settings(max_examples=200, deadline=None)
@given(z=logits_rows(), k=st.integers(1, 45))
def test_top_k_keeps_the_k_best_by_a_full_sort(z: np.ndarray, k: int) -> None:
    kept = np.isfinite(top_k(z, k))
    for row, keep in zip(z, kept, strict=True):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))  # best first, lower id first
        expected = {i for i in order[:k] if np.isfinite(row[i])}
        assert set(np.flatnonzero(keep)) == expected


@settings(max_examples=200, deadline=None)
@given(z=logits_rows(), p=st.floats(0.01, 0.99))
def test_top_p_keeps_the_smallest_prefix_reaching_p(z: np.ndarray, p: float) -> None:
    kept = np.isfinite(top_p(z, p))
    for row, keep in zip(z, kept, strict=True):
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        mass = probs[keep].sum()
        dropped = probs[~keep & np.isfinite(row)]
        # the nucleus reaches p; dropping its least likely token would not
        assert mass >= p - 1e-9
        assert mass - probs[keep].min() < p + 1e-9
        # and nothing dropped is more likely than something kept
        assert dropped.size == 0 or dropped.max() <= probs[keep].min()


# ------------------------------------------------------------------------------------------------
# The same semantics as Hugging Face transformers' logits processors


def test_samplers_match_transformers_logits_processors() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    B, V = 6, 200
    z = (rng.standard_normal((B, V)) * 3).astype(np.float32)  # no ties, no near-boundaries
    context = rng.integers(0, V, size=(B, 10))
    history = TokenHistory(list(context), V)
    ids_t, z_t = torch.from_numpy(context), torch.from_numpy(z)
    ours_theirs = [
        (
            Sampler(repetition_penalty=1.7).filter(z, history),
            transformers.RepetitionPenaltyLogitsProcessor(1.7),
        ),
        (Sampler(temperature=0.6).filter(z), transformers.TemperatureLogitsWarper(0.6)),
        (Sampler(top_k=17).filter(z), transformers.TopKLogitsWarper(17)),
        (Sampler(top_p=0.8).filter(z), transformers.TopPLogitsWarper(0.8)),
        (Sampler(min_p=0.1).filter(z), transformers.MinPLogitsWarper(0.1)),
    ]
    for ours, processor in ours_theirs:
        theirs = processor(ids_t, z_t.clone()).numpy()
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs), str(processor))
        alive = np.isfinite(ours)
        np.testing.assert_allclose(ours[alive], theirs[alive], rtol=1e-6, err_msg=str(processor))
    # and the whole chain, in transformers' order: penalty, temperature, top-k, top-p, min-p
    chain = transformers.LogitsProcessorList(
        [
            transformers.RepetitionPenaltyLogitsProcessor(1.3),
            transformers.TemperatureLogitsWarper(0.8),
            transformers.TopKLogitsWarper(40),
            transformers.TopPLogitsWarper(0.9),
            transformers.MinPLogitsWarper(0.05),
        ]
    )
    theirs = torch.softmax(chain(ids_t, z_t.clone()), dim=-1).numpy()
    s = Sampler(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.3)
    np.testing.assert_allclose(s.probs(z, history), theirs, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    V=st.integers(65, 3000),
    p=st.floats(0.001, 0.999),
    levels=st.integers(1, 6),
)
def test_top_p_in_a_large_vocabulary_with_ties_matches_a_full_sort(
    data: st.DataObject, V: int, p: float, levels: int
) -> None:
    # Few distinct logit values, so many tokens tie, also around the 64th / 256th / ... place
    # where top_p's candidate search cuts.
    values = data.draw(hnp.arrays(np.int64, V, elements=st.integers(0, levels)))
    z = values.astype(np.float64) * 1.7
    kept = np.flatnonzero(np.isfinite(top_p(z, p)))
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    order = sorted(range(V), key=lambda i: (-z[i], i))  # best first, lower id first
    mass, expected = 0.0, []
    for i in order:
        if expected and mass >= p - 1e-12:
            break
        expected.append(i)
        mass += probs[i]
    assert kept.tolist() == sorted(expected)


SAMPLER_MODULES = ("temperature", "top_k", "top_p", "min_p", "penalties")


def test_the_chain_checks_its_values_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Sampler checks its values when it is made; at every token it runs the samplers'
    ``apply_*`` forms, which trust them. With the checkers broken after construction, the
    public functions fail and the chain still samples."""
    import importlib

    # by their import paths: numpylm.sampling.top_k, as an attribute, is the function
    module = {n: importlib.import_module(f"numpylm.sampling.{n}") for n in SAMPLER_MODULES}

    sampler = Sampler(
        temperature=0.7,
        top_k=3,
        top_p=0.9,
        min_p=0.05,
        repetition_penalty=1.3,
        frequency_penalty=0.5,
        presence_penalty=0.5,
    )

    def broken(*args: object) -> None:
        raise AssertionError("checked again")

    for where, name in [
        ("temperature", "check_temperature"),
        ("top_k", "check_top_k"),
        ("top_p", "check_top_p"),
        ("min_p", "check_min_p"),
        ("penalties", "check_repetition_penalty"),
        ("penalties", "check_openai_penalty"),
    ]:
        monkeypatch.setattr(module[where], name, broken)
    z = np.tile(logits_of(P), (2, 1))
    history = TokenHistory([[0], [1]], vocab_size=4)
    for _ in range(5):
        ids, probs = sampler.sample(z, np.random.default_rng(0), history)
        history.add(ids)
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=-1), 1)
    with pytest.raises(AssertionError, match="checked again"):
        top_k(z, 3)
