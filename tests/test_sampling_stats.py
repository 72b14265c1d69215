"""Statistics: the tokens drawn follow the distribution the samplers promise.

Each expected distribution is written out from the formulas in float64 (sort, cut,
renormalise), independently of the code under test; a chi-square goodness-of-fit test (scipy)
compares the counts of many seeded draws with it. Tokens the filters removed must never appear.
With fixed seeds the tests are deterministic; p > 1e-3 is the bar.
"""

from __future__ import annotations

import numpy as np
import pytest

from numpylm import GPT, GPTConfig, generate, generate_batch
from numpylm.sampling import Sampler, TokenHistory

stats = pytest.importorskip("scipy.stats", reason="the chi-square tests need scipy")

P = np.array([0.05, 0.10, 0.15, 0.20, 0.25, 0.12, 0.08, 0.05])
N = 20_000


def expected(probs: np.ndarray, *, k: int | None = None, p: float | None = None) -> np.ndarray:
    """P after top-k then top-p, renormalised, by the textbook recipe."""
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    keep = order[: len(order) if k is None else k]
    if p is not None:
        mass = probs[keep] / probs[keep].sum()
        n = int(np.searchsorted(np.cumsum(mass), p - 1e-12)) + 1  # first prefix reaching p
        keep = keep[:n]
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out / out.sum()


def counts_of(
    sampler: Sampler, logits: np.ndarray, seed: int, history: object = None
) -> np.ndarray:
    """Draw N tokens from one row of logits (as a batch of N identical rows)."""
    z = np.tile(logits.astype(np.float32), (N, 1))
    rng = np.random.default_rng(seed)
    if history is not None:
        ids, _ = sampler.sample(z, rng, history)  # type: ignore[arg-type]
    else:
        ids, _ = sampler.sample(z, rng)
    return np.bincount(ids, minlength=len(logits))


def assert_follows(counts: np.ndarray, probs: np.ndarray) -> None:
    """Chi-square goodness of fit over the tokens with probability > 0; none outside."""
    alive = probs > 0
    assert counts[~alive].sum() == 0, f"removed tokens were drawn: {counts}"
    result = stats.chisquare(counts[alive], counts.sum() * probs[alive])
    assert result.pvalue > 1e-3, (counts, probs, result)


@pytest.mark.parametrize(
    ("sampler", "probs"),
    [
        (Sampler(), P),
        (Sampler(top_k=3), expected(P, k=3)),
        (Sampler(top_p=0.6), expected(P, p=0.6)),
        (Sampler(top_k=5, top_p=0.7), expected(P, k=5, p=0.7)),
        (Sampler(min_p=0.45), np.where(P >= 0.45 * P.max(), P, 0) / P[P >= 0.45 * 0.25].sum()),
        (Sampler(temperature=0.5), P**2 / (P**2).sum()),
        (Sampler(temperature=2.0), np.sqrt(P) / np.sqrt(P).sum()),
    ],
    ids=["plain", "top_k", "top_p", "top_k+top_p", "min_p", "T=0.5", "T=2"],
)
def test_draws_follow_the_filtered_distribution(sampler: Sampler, probs: np.ndarray) -> None:
    assert_follows(counts_of(sampler, np.log(P), seed=123), probs)


def test_draws_follow_the_penalised_distribution() -> None:
    # Token 4 (p 0.25) is in the prompt and was generated twice; token 3 was generated once.
    history = TokenHistory([[4]] * N, vocab_size=len(P))
    history.add(np.full(N, 4))
    history.add(np.full(N, 4))
    history.add(np.full(N, 3))
    z = np.log(P)
    penalised = z.copy()
    penalised[[3, 4]] *= 1.5  # the logits are negative: multiplied by theta
    penalised[4] -= 2 * 0.3 + 0.2  # frequency 0.3 per occurrence, presence 0.2
    penalised[3] -= 1 * 0.3 + 0.2
    probs = np.exp(penalised) / np.exp(penalised).sum()
    sampler = Sampler(repetition_penalty=1.5, frequency_penalty=0.3, presence_penalty=0.2)
    assert_follows(counts_of(sampler, z, seed=5, history=history), probs)


def test_different_seeds_differ_and_the_same_seed_repeats() -> None:
    a = counts_of(Sampler(), np.log(P), seed=1)
    assert np.array_equal(a, counts_of(Sampler(), np.log(P), seed=1))
    assert not np.array_equal(a, counts_of(Sampler(), np.log(P), seed=2))


# ------------------------------------------------------------------------------------------------
# The story's experiment: ask the same question 100 times.


@pytest.fixture
def peaked_model() -> GPT:
    """A small random model whose next-token distribution is far from uniform, so the
    experiment is not trivial (its embeddings are scaled up to spread the logits)."""
    model = GPT(GPTConfig(vocab_size=12, n_ctx=16, n_layer=1, n_head=2, n_embd=16), seed=3)
    model.params["wte.weight"] = model.params["wte.weight"] * 10.0
    return model


def first_token_probs(model: GPT, prompt: list[int]) -> np.ndarray:
    z = model(np.asarray(prompt), last_only=True)[-1].astype(np.float64)  # (V,)
    e = np.exp(z - z.max())
    return e / e.sum()


def pooled(counts: np.ndarray, probs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge the tokens expected fewer than 5 times into one cell (chi-square needs >= 5)."""
    small = probs * n < 5
    if small.sum() <= 1:
        return counts, probs
    return (
        np.append(counts[~small], counts[small].sum()),
        np.append(probs[~small], probs[small].sum()),
    )


def test_the_same_question_100_times(peaked_model: GPT) -> None:
    """ "If we ask the same question 100 times, we would expect the first token to be 'The' on
    40 out of the 100 answers": the histogram of first tokens follows the model's softmax."""
    prompt = [1, 5, 7]
    probs = first_token_probs(peaked_model, prompt)
    assert 0.3 < probs.max() < 0.5  # a favourite near 40%, like the story's " The"
    rng = np.random.default_rng(2024)
    firsts = [int(generate(peaked_model, prompt, 1, rng=rng)[-1]) for _ in range(100)]
    counts = np.bincount(firsts, minlength=len(probs))
    c, p = pooled(counts, probs, 100)
    assert stats.chisquare(c, 100 * p).pvalue > 1e-3, (counts, np.round(100 * probs, 1))
    # the favourite on about 41 of the 100 answers (binomial), and other answers on the rest
    favourite = int(np.argmax(probs))
    assert stats.binomtest(int(counts[favourite]), 100, probs[favourite]).pvalue > 1e-3
    assert len(set(firsts)) > 3


def test_many_samples_as_one_batch_follow_the_model(peaked_model: GPT) -> None:
    prompt = [2, 2, 9, 4]
    probs = first_token_probs(peaked_model, prompt)
    rows = generate_batch(peaked_model, [prompt], 1, num_samples=3000, seed=11)
    counts = np.bincount([int(r[-1]) for r in rows], minlength=len(probs))
    c, p = pooled(counts, probs, 3000)
    assert stats.chisquare(c, 3000 * p).pvalue > 1e-3


def test_top_k_in_generation_never_leaves_the_top_k(peaked_model: GPT) -> None:
    prompt = [3, 1]
    probs = first_token_probs(peaked_model, prompt)
    rows = generate_batch(peaked_model, [prompt], 1, num_samples=3000, seed=4, top_k=2)
    counts = np.bincount([int(r[-1]) for r in rows], minlength=len(probs))
    top2 = np.argsort(-probs, kind="stable")[:2]
    want = np.zeros_like(probs)
    want[top2] = probs[top2] / probs[top2].sum()
    assert_follows(counts, want)
