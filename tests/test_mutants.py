"""Tests written against bugs that once got through the suite.

A mutation check (one realistic one-line bug at a time, see docs/reliability.md) found changes
that every other test let pass. Each test here fails on one of them; its docstring names the
bug. Each was tried by hand on the mutated code and seen to fail.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import numpy as np
import pytest

from numpylm import GPT, GPTConfig, Sampler, complete, generate, generate_batch, load, stream
from numpylm.cli import main
from numpylm.sampling import TokenHistory

CONFIG = GPTConfig(vocab_size=64, n_ctx=32, n_layer=1, n_head=2, n_embd=16)
PROMPT = np.array([1, 2, 3, 4])


@pytest.fixture(scope="module")
def model() -> GPT:
    return GPT(CONFIG, seed=0)


def test_seed_0_is_a_seed(model: GPT) -> None:
    """Bug: ``if seed:`` for ``if seed is not None:``, so seed=0 gave unrepeatable draws.
    seed=0 draws exactly what ``np.random.default_rng(0)`` draws."""
    a = generate(model, PROMPT, 20, seed=0)
    assert np.array_equal(a, generate(model, PROMPT, 20, seed=0))
    assert np.array_equal(a, generate(model, PROMPT, 20, rng=np.random.default_rng(0)))
    assert not np.array_equal(a, generate(model, PROMPT, 20, seed=1))


def test_seed_0_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    model, tokenizer = load()
    expected = "ROMEO:" + complete(model, tokenizer, "ROMEO:", max_new_tokens=12, seed=0) + "\n"
    for _ in range(2):
        assert main(["generate", "ROMEO:", "-n", "12", "--seed", "0"]) == 0
        assert capsys.readouterr().out == expected


def test_presence_penalty_alone() -> None:
    """Bug: the chain applied penalties only when the repetition or frequency penalty was on,
    so a presence penalty on its own did nothing. By hand: ``z - alpha * (count > 0)``."""
    logits = np.array([[1.0, 2.0, 3.0, 0.5]], dtype=np.float32)
    history = TokenHistory([[]], vocab_size=4)
    for token in (2, 2, 0):  # generated: token 2 twice, token 0 once
        history.add(np.array([token]))
    sampler = Sampler(presence_penalty=1.5)
    assert sampler.uses_history
    expected = np.array([[1.0 - 1.5, 2.0, 3.0 - 1.5, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(sampler.filter(logits, history), expected)


def test_presence_penalty_alone_changes_generation(model: GPT) -> None:
    """The same bug seen from ``generate``: a strong presence penalty alone forbids repeats."""
    out = generate(model, PROMPT, 20, seed=3, presence_penalty=2.0, temperature=0.0)
    plain = generate(model, PROMPT, 20, seed=3, temperature=0.0)
    assert not np.array_equal(out, plain)


@pytest.fixture
def token_counts(model: GPT, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many tokens each call of ``model`` read (its ids' last axis)."""
    counts: list[int] = []
    real = type(model).__call__

    def counting(self: GPT, ids: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
        counts.append(np.asarray(ids).shape[-1])
        return real(self, ids, *args, **kwargs)

    monkeypatch.setattr(type(model), "__call__", counting)
    yield counts


def test_the_cache_is_on_by_default(model: GPT, token_counts: list[int]) -> None:
    """Bug: ``use_cache`` defaulting to False. Every entry point reads the prompt once and
    then one token per step; without the cache each step re-reads the whole text."""
    builtin, tokenizer = load()
    prompt = tokenizer.decode([10, 20, 30, 40])  # four tokens, as PROMPT
    assert len(tokenizer.encode(prompt)) == 4
    calls = [
        lambda: generate(model, PROMPT, 6, seed=0),
        lambda: generate_batch(model, [PROMPT, PROMPT], 6, seed=0),
        lambda: list(stream(builtin, tokenizer, prompt, max_new_tokens=6, seed=0)),
        lambda: complete(builtin, tokenizer, prompt, max_new_tokens=6, seed=0),
    ]
    for call in calls:
        token_counts.clear()
        call()
        assert token_counts[0] == 4 and token_counts[1:] == [1] * (len(token_counts) - 1)
        assert len(token_counts) >= 5  # a step per new token (the last needs no model call)


@pytest.mark.parametrize(
    ("flag", "value", "option"),
    [
        ("--temperature", "0.5", "temperature"),
        ("--top-k", "3", "top_k"),
        ("--top-p", "0.5", "top_p"),
        ("--min-p", "0.3", "min_p"),
        ("--repetition-penalty", "1.8", "repetition_penalty"),
        ("--frequency-penalty", "1.5", "frequency_penalty"),
        ("--presence-penalty", "1.5", "presence_penalty"),
    ],
)
def test_every_sampling_flag_reaches_the_sampler(
    flag: str, value: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug: ``--min-p`` parsed, then dropped before the sampler was built. Each flag must give
    what the API gives with the same option and seed, and something else than without it."""
    model, tokenizer = load()
    args = ["generate", "ROMEO:", "-n", "24", "--seed", "7"]
    number = float(value) if "." in value else int(value)
    expected = complete(model, tokenizer, "ROMEO:", max_new_tokens=24, seed=7, **{option: number})
    assert main([*args, flag, value]) == 0
    with_flag = capsys.readouterr().out
    assert with_flag == "ROMEO:" + expected + "\n"
    assert main(args) == 0
    assert capsys.readouterr().out != with_flag


def test_temperature_comes_before_top_p() -> None:
    """Bug: top-p applied before the temperature. By hand: P = [0.65, 0.2, 0.15], temperature
    2 flattens it to P**(1/2) normalised = [0.491, 0.273, 0.236]; top-p 0.6 then keeps two
    tokens. Top-p first would keep one (0.65 >= 0.6 alone)."""
    p = np.array([0.65, 0.2, 0.15])
    logits = np.log(p).astype(np.float32)[None, :]
    got = Sampler(temperature=2.0, top_p=0.6).probs(logits)[0]
    flat = np.sqrt(p) / np.sqrt(p).sum()
    assert flat[0] < 0.6 <= flat[0] + flat[1]  # the hand computation's premise
    expected = np.array([flat[0], flat[1], 0.0]) / (flat[0] + flat[1])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.dtype == np.float32


def test_min_p_comes_after_temperature() -> None:
    """The same question for min-p: it compares each probability with the top one *after*
    the temperature. P = [0.5, 0.3, 0.2], min_p 0.5: at temperature 1, 0.3 < 0.25 is false, so
    two tokens stay; at temperature 0.5 (P squared: [0.658, 0.237, 0.105]) one does."""
    p = np.array([0.5, 0.3, 0.2])
    logits = np.log(p).astype(np.float32)[None, :]
    np.testing.assert_allclose(
        Sampler(min_p=0.5).probs(logits)[0], [0.5 / 0.8, 0.3 / 0.8, 0], rtol=1e-6
    )
    sharp = p**2 / (p**2).sum()
    assert sharp[1] < 0.5 * sharp[0]
    np.testing.assert_allclose(Sampler(temperature=0.5, min_p=0.5).probs(logits)[0], [1, 0, 0])


def test_top_k_and_top_p_both_apply() -> None:
    """top_k=2 then top_p=0.9 on P = [0.4, 0.35, 0.25]: top-k keeps two, renormalised to
    [0.533, 0.467]; top-p 0.9 then needs both. Either filter alone gives another answer."""
    p = np.array([0.4, 0.35, 0.25])
    logits = np.log(p).astype(np.float32)[None, :]
    got = Sampler(top_k=2, top_p=0.9).probs(logits)[0]
    np.testing.assert_allclose(got, [0.4 / 0.75, 0.35 / 0.75, 0], rtol=1e-6)
    assert not np.allclose(Sampler(top_p=0.9).probs(logits)[0], got)
    assert math.isclose(float(Sampler(top_k=1, top_p=0.9).probs(logits)[0, 0]), 1.0)


# --- survivors of the mutation run (docs/reliability.md, "Mutation testing") ----------------


def test_the_sampler_stores_its_checked_values() -> None:
    """Bug: ``__post_init__`` storing a checked value under the wrong name, so the field kept
    what the caller passed. The checks turn NumPy scalars and ints into Python floats/ints."""
    s = Sampler(
        temperature=np.float32(0.5),
        top_k=np.int64(3),
        top_p=np.float64(0.5),
        min_p=np.float32(0.25),
        repetition_penalty=2,
        frequency_penalty=1,
        presence_penalty=np.int8(1),
    )
    expected = {
        "temperature": (float, 0.5),
        "top_k": (int, 3),
        "top_p": (float, 0.5),
        "min_p": (float, 0.25),
        "repetition_penalty": (float, 2.0),
        "frequency_penalty": (float, 1.0),
        "presence_penalty": (float, 1.0),
    }
    for name, (kind, value) in expected.items():
        assert type(getattr(s, name)) is kind and getattr(s, name) == value, name


@pytest.mark.parametrize(
    "name", ["temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty",
             "presence_penalty"],
)  # fmt: skip
def test_a_bad_sampling_value_is_named(name: str) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be a number, got str 'x'$"):
        Sampler(**{name: "x"})  # type: ignore[arg-type]


def test_penalties_without_history_say_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"^penalties need the tokens seen so far: pass history=$"):
        Sampler(repetition_penalty=1.2).filter(np.zeros((1, 4), dtype=np.float32))


def test_a_penalty_of_exactly_1() -> None:
    """Bug: the "nothing to do" shortcut taken at 1 instead of 0."""
    logits = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    history = TokenHistory([[]], vocab_size=3)
    history.add(np.array([1]))
    np.testing.assert_array_equal(
        Sampler(presence_penalty=1.0).filter(logits, history), [[1.0, 1.0, 3.0]]
    )
    np.testing.assert_array_equal(
        Sampler(frequency_penalty=1.0).filter(logits, history), [[1.0, 1.0, 3.0]]
    )


def test_min_p_of_1_keeps_the_most_likely_only() -> None:
    """min_p = 1 is allowed and keeps the tokens as likely as the top one (bugs: refusing 1,
    or skipping the filter at 1)."""
    logits = np.log(np.array([[0.2, 0.5, 0.3]])).astype(np.float32)
    np.testing.assert_array_equal(Sampler(min_p=1.0).probs(logits), [[0.0, 1.0, 0.0]])


def test_min_p_forgives_float32_rounding() -> None:
    """A ratio that is min_p exactly in real arithmetic but a few float32 steps below it after
    exp and log is kept (the slack is float32's, not float64's)."""
    kept = 0
    for p in np.linspace(0.05, 0.5, 200):
        logits = np.log(np.array([[1.0, p]])).astype(np.float32)
        kept += int(np.isfinite(Sampler(min_p=float(p)).filter(logits)[0, 1]))
    assert kept == 200


def test_token_history_types() -> None:
    """TokenHistory's arrays are as documented: ``seen`` bool, ``counts`` int32, and a prompt
    of no tokens is allowed (an empty list has no integer dtype of its own)."""
    h = TokenHistory([[], [3, 3]], vocab_size=5)
    assert h.seen.dtype == np.bool_ and h.counts.dtype == np.int32
    assert h.seen[1].tolist() == [False, False, False, True, False] and not h.seen[0].any()


def test_log_softmax_is_per_row() -> None:
    """Bug: the normaliser summed over the whole batch, not each row."""
    from numpylm.sampling.softmax import log_softmax

    z = np.array([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]], dtype=np.float32)
    out = log_softmax(z)
    np.testing.assert_allclose(np.exp(out).sum(axis=-1), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out[1], np.log([1 / 3] * 3), rtol=1e-6)


def test_draw_when_rounding_carries_past_the_last_likely_token() -> None:
    """``u * total`` can round up to the total itself; the draw must then be the last token
    with probability > 0, never a token of probability 0 past it (u = 1.0 stands for that
    rounding)."""
    from numpylm.sampling.chain import draw

    probs = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.0, 0.75, 0.0]])
    np.testing.assert_array_equal(draw(probs, np.array([1.0, 1.0])), [1, 2])
    np.testing.assert_array_equal(draw(probs, np.array([0.0, 0.3])), [0, 2])


def test_adamw_defaults_and_named_refusals() -> None:
    """Bugs: another default weight decay; a refusal naming the wrong argument; betas of 0
    refused (0 is allowed: no running mean); a bool taken for a number."""
    from numpylm import AdamW

    params = {"w": np.ones((2, 2), dtype=np.float32)}
    assert AdamW(params, lr=0.1).weight_decay == 0.1
    assert AdamW(params, lr=0.1, betas=(0.0, 0.0)).betas == (0.0, 0.0)
    for name in ("lr", "eps", "weight_decay"):
        with pytest.raises(ValueError, match=rf"^{name} must be a finite number >= 0, got -1$"):
            AdamW(params, **{"lr": 0.1, name: -1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^lr must be a finite number >= 0, got True$"):
        AdamW(params, lr=True)
    with pytest.raises(ValueError, match=r"^lr must be a finite number >= 0, got -2$"):
        AdamW(params, lr=0.1).step({"w": np.ones((2, 2), dtype=np.float32)}, lr=-2)


def test_adamw_names_every_missing_gradient_up_to_five() -> None:
    from numpylm import AdamW

    params = {f"p{i}": np.ones(2, dtype=np.float32) for i in range(7)}
    with pytest.raises(
        ValueError, match=r"missing \['p0', 'p1', 'p2', 'p3', 'p4'\], unexpected \[\]"
    ):
        AdamW(params, lr=0.1).step({})
    opt = AdamW(params, lr=0.1)
    state = {k: v for k, v in opt.state_dict().items() if k == "step"}
    with pytest.raises(
        ValueError,
        match=re.escape(
            "missing ['exp_avg.p0', 'exp_avg.p1', 'exp_avg.p2', 'exp_avg.p3', 'exp_avg.p4'],"
        ),
    ):
        opt.load_state_dict(state)
    bad = opt.state_dict() | {"exp_avg.p0": np.ones(3, dtype=np.float32)}
    with pytest.raises(
        ValueError, match=r"optimiser state exp_avg\.p0 has shape \(3,\), the parameter \(2,\)"
    ):
        opt.load_state_dict(bad)


def test_adamw_eps_is_added_to_the_denominator() -> None:
    """A gradient near eps shows the sign of eps: one step with g = 1e-9 (no decay, bias
    corrected: m_hat = g, sqrt(v_hat) = g) moves the weight by lr * g / (g + eps) = lr / 11."""
    from numpylm import AdamW

    p = {"b": np.zeros(1, dtype=np.float64)}
    AdamW(p, lr=1.0, eps=1e-8, weight_decay=0.0).step({"b": np.array([1e-9])})
    np.testing.assert_allclose(p["b"], [-1 / 11], rtol=1e-6)


def test_clip_grad_norm_at_the_edges() -> None:
    """A norm below the 1e-6 guard is left alone (not flipped in sign), one above max_norm is
    scaled to it."""
    from numpylm.training.optim import clip_grad_norm

    tiny = {"g": np.array([3e-8, 4e-8])}
    assert clip_grad_norm(tiny, 1.0) == pytest.approx(5e-8)
    np.testing.assert_array_equal(tiny["g"], [3e-8, 4e-8])
    big = {"g": np.array([3.0, 4.0])}
    assert clip_grad_norm(big, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(big["g"], [0.6, 0.8], rtol=1e-6)


def test_cosine_lr_edges() -> None:
    from numpylm.training.optim import cosine_lr

    kw = {"max_lr": 1.0, "warmup_steps": 2, "total_steps": 10}
    assert cosine_lr(5, min_lr=1.0, **kw) == 1.0  # min_lr == max_lr: a constant rate
    with pytest.raises(ValueError, match=r"step must be a non-negative integer, got 1\.5"):
        cosine_lr(1.5, min_lr=0.1, **kw)  # type: ignore[arg-type]


def test_cross_entropy_rows_far_apart() -> None:
    """The log-softmax shift is per row: a row whose logits sit 1000 below another's must not
    underflow (a shift by the batch's maximum would make its loss infinite)."""
    from numpylm.layers import cross_entropy

    logits = np.array([[[0.0, 1.0], [-1000.0, -999.0]]], dtype=np.float32)  # (1, 2, 2)
    loss, dlogits = cross_entropy(logits, np.array([[1, 1]]))
    assert loss == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-6)
    assert np.isfinite(dlogits).all()
    with pytest.raises(ValueError, match=r"^no position counts towards the loss: every target"):
        cross_entropy(logits, np.array([[-1, -1]]))


def test_dropout_mask_keeps_float32_draws() -> None:
    """The mask is drawn in float32 (bug: float64 draws give other masks for the same seed, so
    a run resumed by another version would not be bit-exact)."""
    from numpylm.layers import dropout_mask

    mask = dropout_mask((1000,), 0.5, np.random.default_rng(0))
    expected = np.random.default_rng(0).random((1000,), dtype=np.float32) >= 0.5
    np.testing.assert_array_equal(mask, expected)


# --- survivors of the second mutation run ----------------------------------------------------


def _nucleus_by_full_sort(z: np.ndarray, p: float) -> list[int]:
    """The reference top-p for one row: sort every token (best logit first, lower id first) and
    keep tokens until the mass before the next one reaches p (in float64, away from ties)."""
    probs = np.exp(z.astype(np.float64) - z.max())
    probs /= probs.sum()
    kept, mass = [], 0.0
    for i in sorted(range(z.size), key=lambda i: (-z[i], i)):
        if kept and mass >= p:
            break
        kept.append(i)
        mass += probs[i]
    return sorted(kept)


def test_top_p_treats_each_row_of_a_batch_on_its_own() -> None:
    """Bugs: the candidate search or its stopping test taken over the whole batch (a sum, min
    or count along the wrong axis), so that one peaked row stops the search before a flat row
    has its nucleus, or widens it past the vocabulary. Rows that need 1, about 100, about 450
    and all 700 tokens, and a row already cut by top-k, each equal a full sort, and the batch
    equals its rows one at a time, also as (2, 3, V)."""
    from numpylm.sampling import top_k, top_p

    rng = np.random.default_rng(0)
    V, p = 700, 0.9
    rows = np.stack(
        [
            np.r_[20.0, rng.standard_normal(V - 1)],  # one token holds nearly everything
            rng.standard_normal(V) * 2.5,  # a nucleus of about a hundred
            rng.standard_normal(V) * 0.8,  # a wide nucleus, past the first 256 candidates
            rng.standard_normal(V) * 1e-3,  # flat: nearly every token is needed
            top_k(rng.standard_normal(V) * 0.5, 50),  # 50 alive, the rest -inf
            rng.standard_normal(V) * 2.0,
        ]
    ).astype(np.float32)  # (6, V)
    batch = top_p(rows, p)
    sizes = []
    for z, out in zip(rows, batch, strict=True):
        kept = np.flatnonzero(np.isfinite(out)).tolist()
        assert kept == _nucleus_by_full_sort(z, p)
        np.testing.assert_array_equal(out, top_p(z, p))
        sizes.append(len(kept))
    assert sizes[0] == 1 and 64 < sizes[1] < 256 < sizes[2] < sizes[3] and sizes[4] <= 50
    np.testing.assert_array_equal(top_p(rows.reshape(2, 3, V), p), batch.reshape(2, 3, V))


def test_top_p_of_1_keeps_even_the_negligible_tail() -> None:
    """Bug: the ``p == 1`` shortcut lost, so that p = 1 went through the float32 search and
    dropped tokens whose mass rounds away (p = 1 keeps everything, by definition)."""
    from numpylm.sampling import top_p

    z = np.r_[0.0, np.full(999, -40.0)].astype(np.float32)  # the tail: e^-40 each
    np.testing.assert_array_equal(top_p(z, 1.0), z)


def test_non_finite_logits_say_what_went_wrong() -> None:
    from numpylm.sampling import softmax

    with pytest.raises(ValueError) as err:
        softmax(np.array([0.0, np.nan], dtype=np.float32))
    assert str(err.value) == (
        "logits contain NaN or +inf, so they are not a distribution (the model's weights may "
        "have diverged)"
    )


@pytest.mark.parametrize("name", ["frequency_penalty", "presence_penalty"])
def test_openai_penalties_name_themselves(name: str) -> None:
    from numpylm import sampling

    function = getattr(sampling, name)
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        function(np.zeros(4, dtype=np.float32), np.zeros(4, dtype=np.int64), 3.0)


def test_adamw_names_at_most_five_unexpected_names() -> None:
    """Six unexpected gradients or state entries are listed as the first five, like missing."""
    from numpylm import AdamW

    params = {"w": np.ones(2, dtype=np.float32)}
    extra = {f"x{i}": np.ones(2, dtype=np.float32) for i in range(6)}
    five = re.escape("unexpected ['x0', 'x1', 'x2', 'x3', 'x4']")
    opt = AdamW(params, lr=0.1)
    with pytest.raises(ValueError, match=five + "$"):
        opt.step({"w": np.ones(2, dtype=np.float32)} | extra)
    with pytest.raises(ValueError, match=five + "$"):
        opt.load_state_dict(opt.state_dict() | extra)


def test_linear_without_a_bias() -> None:
    from numpylm.layers import linear

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    w = np.ones((3, 2), dtype=np.float32)
    np.testing.assert_array_equal(linear(x, w), x @ w)


def test_gelu_backward_at_zero_raises_no_floating_point_error() -> None:
    """``out / x`` is 0 / 0 at x = 0 and is then set to the limit 0.5: the division must not
    warn, or fail for a caller who runs under ``np.errstate(all="raise")``."""
    from numpylm.layers import gelu, gelu_backward

    x = np.array([0.0, 1.0, -1.0], dtype=np.float32)
    with np.errstate(all="raise"):
        dx = gelu_backward(np.ones(3, dtype=np.float32), x, gelu(x))
    assert dx[0] == 0.5


def test_dropout_keeps_an_entry_whose_draw_equals_the_rate() -> None:
    """Kept where the draw u >= rate, so P(keep) = 1 - rate exactly for u uniform on [0, 1)."""
    from numpylm.layers import dropout_mask

    class Draws:
        def random(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
            return np.array([0.0, 0.25, 0.5], dtype=dtype)

    mask = dropout_mask((3,), 0.25, Draws())  # type: ignore[arg-type]
    assert mask.tolist() == [False, True, True]


def test_draw_scales_u_by_a_total_that_rounding_left_short() -> None:
    """Bug: u divided by the row's total instead of multiplied. Rows sum to 1 up to rounding;
    scaled, token 0 covers [0, 0.5 / 0.99), so u = 0.5 still falls in it."""
    from numpylm.sampling import draw

    probs = np.array([[0.5, 0.49]], dtype=np.float32)
    assert draw(probs, np.array([0.5])).tolist() == [0]
    assert draw(probs, np.array([0.51])).tolist() == [1]


def test_top_p_with_ties_at_the_cut_in_a_batch() -> None:
    """Bug: the "strictly above the m-th candidate" test taken against the whole batch's
    smallest candidate, so that tokens tied with a row's m-th count as inside, the search stops
    early, and the nucleus is taken from whichever tied tokens ``argpartition`` happened to pick
    instead of the lowest ids. Row 1: one token far ahead, then 300 tied (lowest ids win)."""
    from numpylm.sampling import top_p

    rng = np.random.default_rng(1)
    V, p = 700, 0.5
    tied = np.full(V, -30.0)
    tied[rng.permutation(V)[:300]] = 2.0
    tied[V - 1] = 5.0
    rows = np.stack([rng.standard_normal(V), tied]).astype(np.float32)  # (2, V)
    batch = top_p(rows, p)
    for z, out in zip(rows, batch, strict=True):
        assert np.flatnonzero(np.isfinite(out)).tolist() == _nucleus_by_full_sort(z, p)


def test_top_p_forgives_float32_rounding_below_p() -> None:
    """Bug: the slack taken from float64's epsilon for float32 probabilities. In float32 the
    softmax of log [0.5, 0.3, 0.1, 0.1] gives the first token 0.49999997, just short of p = 0.5,
    and the first two 0.79999995, short of 0.8; exact arithmetic reaches p with one and with two
    tokens, and so must top_p."""
    from numpylm.sampling import top_p

    z = np.log(np.array([0.5, 0.3, 0.1, 0.1], dtype=np.float32))
    assert np.isfinite(top_p(z, 0.5)).tolist() == [True, False, False, False]
    assert np.isfinite(top_p(z, 0.8)).tolist() == [True, True, False, False]


def test_a_row_with_nothing_left_says_what_to_loosen() -> None:
    from numpylm.sampling import softmax

    with pytest.raises(ValueError) as err:
        softmax(np.array([[0.0, 1.0], [-np.inf, -np.inf]], dtype=np.float32))
    assert str(err.value) == (
        "every token of a row was removed (all logits are -inf): nothing is left to sample; "
        "loosen the filters (top_k, top_p, min_p) or check the logits"
    )


def test_softmax_checks_along_its_own_axis() -> None:
    """Bug: the check made along the last axis whatever ``axis`` is: a column that is all -inf
    is a distribution with nothing in it when the softmax runs down the columns."""
    from numpylm.sampling import softmax

    z = np.array([[0.0, -np.inf], [1.0, -np.inf]], dtype=np.float32)  # rows fine, column 1 not
    np.testing.assert_allclose(softmax(z)[:, 0], 1.0)
    with pytest.raises(ValueError, match="every token of a row was removed"):
        softmax(z, axis=0)


@pytest.mark.parametrize("name", ["frequency_penalty", "presence_penalty"])
def test_openai_penalties_take_both_ends_of_their_range(name: str) -> None:
    """OpenAI's range is [-2, 2], both ends included (bug: -2 refused)."""
    from numpylm import sampling

    function = getattr(sampling, name)
    logits, counts = np.zeros(2, dtype=np.float32), np.array([1, 0])
    np.testing.assert_array_equal(function(logits, counts, -2.0), [2.0, 0.0])
    np.testing.assert_array_equal(function(logits, counts, 2.0), [-2.0, 0.0])
