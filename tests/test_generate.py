"""The generation loop: cache, context overflow, batches, seeds, EOS, stop strings, UTF-8
streaming, log-probabilities.

The references are independent of the code under test: a plain loop that re-reads the last
``n_ctx`` tokens with the model at every step, sequences run one at a time, ``Tokenizer.decode``
for the text, a float64 softmax for the probabilities, and a character-by-character stop rule.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm import (
    GPT,
    GPTConfig,
    Tokenizer,
    complete,
    complete_batch,
    generate,
    generate_batch,
    stream,
)
from numpylm.generation.context import Context
from numpylm.generation.streaming import TextStream

# ------------------------------------------------------------------------------------------------
# Helpers


def byte_tokenizer() -> Tokenizer:
    """The 256 single bytes and four merges; n_vocab 261, <|endoftext|> is 260."""
    ranks = {bytes([b]): b for b in range(256)}
    ranks |= {b" t": 256, b"he": 257, b" the": 258, b"ll": 259}
    return Tokenizer.from_ranks(ranks, name="bytes-test")


def byte_model(vocab_size: int = 261, dtype: type = np.float32) -> GPT:
    return GPT(GPTConfig(vocab_size=vocab_size, n_ctx=32, n_layer=2, n_head=2, n_embd=16), 1, dtype)


def reference_greedy(model: GPT, prompt: Sequence[int], n: int) -> list[int]:
    """Greedy decoding the slow, obvious way: the whole visible context at every step."""
    ids = list(prompt)
    for _ in range(n):
        logits = model(np.asarray(ids[-model.config.n_ctx :]))[-1]  # (V,)
        ids.append(int(np.argmax(logits)))
    return ids


class Scripted:
    """A stand-in for ``GPT`` that writes a fixed sequence of tokens, one per call, whatever it
    reads: for tests of the text layer (UTF-8, EOS, stop strings), where the model's maths is
    not under test."""

    def __init__(self, script: Sequence[int], vocab_size: int) -> None:
        self.config = GPTConfig(vocab_size=vocab_size, n_ctx=64, n_layer=1, n_head=1, n_embd=1)
        self.script = list(script)
        self.calls = 0

    def new_cache(self, batch_size: int = 1) -> types.SimpleNamespace:
        return types.SimpleNamespace(length=0)

    def __call__(self, ids: np.ndarray, cache: object = None, **kwargs: object) -> np.ndarray:
        B, T = ids.shape
        if cache is not None:
            cache.length += T  # type: ignore[attr-defined]
        logits = np.zeros((B, 1, self.config.vocab_size), dtype=np.float32)
        logits[:, :, self.script[min(self.calls, len(self.script) - 1)]] = 10.0
        self.calls += 1
        return logits


# ------------------------------------------------------------------------------------------------
# The loop: ids in, ids out


@pytest.mark.parametrize("use_float64", [False, True])
def test_cache_and_no_cache_give_the_same_ids(
    tiny_model: GPT, tiny_model64: GPT, use_float64: bool
) -> None:
    model = tiny_model64 if use_float64 else tiny_model
    prompt = [3, 14, 15, 9, 26]
    for opts in [{"temperature": 0.0}, {"seed": 42}, {"seed": 7, "top_k": 5, "top_p": 0.9}]:
        # 45 new tokens: past n_ctx = 32, so the cache is rebuilt along the way too
        cached = generate(model, prompt, 45, use_cache=True, **opts)  # type: ignore[arg-type]
        uncached = generate(model, prompt, 45, use_cache=False, **opts)  # type: ignore[arg-type]
        assert cached.tolist() == uncached.tolist(), opts
        assert len(cached) == 50


def test_greedy_matches_the_obvious_loop_also_past_the_context(tiny_model64: GPT) -> None:
    for prompt in [[1, 2, 3], list(range(40))]:  # the second is longer than n_ctx = 32 already
        out = generate(tiny_model64, prompt, 50, temperature=0)
        assert out.tolist() == reference_greedy(tiny_model64, prompt, 50)
        assert out.dtype == np.int64


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("use_float64", [False, True])
def test_batched_greedy_equals_one_at_a_time(
    tiny_model: GPT, tiny_model64: GPT, use_cache: bool, use_float64: bool
) -> None:
    model = tiny_model64 if use_float64 else tiny_model
    prompts = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42], list(range(10, 24))]
    for opts in [{"temperature": 0.0}, {"temperature": 0.0, "repetition_penalty": 1.5}]:
        batch = generate_batch(model, prompts, 25, use_cache=use_cache, **opts)  # type: ignore[arg-type]
        alone = [generate(model, p, 25, use_cache=use_cache, **opts) for p in prompts]  # type: ignore[arg-type]
        assert [b.tolist() for b in batch] == [a.tolist() for a in alone]


def test_num_samples_runs_one_prompt_many_times(tiny_model: GPT) -> None:
    greedy = generate_batch(tiny_model, [[1, 2]], 10, num_samples=4, temperature=0)
    assert len(greedy) == 4 and all(g.tolist() == greedy[0].tolist() for g in greedy)
    assert greedy[0].tolist() == generate(tiny_model, [1, 2], 10, temperature=0).tolist()
    sampled = generate_batch(tiny_model, [[1, 2], [3]], 10, num_samples=3, seed=0)
    assert [len(s) for s in sampled] == [12, 12, 12, 11, 11, 11]  # prompt by prompt
    assert len({tuple(s) for s in sampled[:3]}) == 3  # different samples of the same prompt


def test_eos_stops_and_is_included(tiny_model: GPT) -> None:
    free = generate(tiny_model, [7, 8], 20, seed=3)
    eos = int(free[5])  # the 4th new token
    first = 2 + free[2:].tolist().index(eos)  # where it first appears among the new tokens
    out = generate(tiny_model, [7, 8], 20, seed=3, eos_id=eos)
    assert out.tolist() == free[: first + 1].tolist()
    # in a batch, EOS ends its own row only
    rows = generate_batch(tiny_model, [[7, 8], [7, 8]], 20, temperature=0, eos_id=eos)
    assert rows[0].tolist() == rows[1].tolist()
    other = generate_batch(tiny_model, [[7, 8], [30, 31]], 20, seed=3, eos_id=eos)
    assert other[0][-1] == eos or len(other[0]) == 22
    assert all(eos not in r[2:-1].tolist() for r in other)


def test_same_seed_same_ids_different_seed_different_ids(tiny_model: GPT) -> None:
    a = generate(tiny_model, [1], 30, seed=123)
    assert a.tolist() == generate(tiny_model, [1], 30, seed=123).tolist()
    assert a.tolist() != generate(tiny_model, [1], 30, seed=124).tolist()
    rng = np.random.default_rng(123)
    assert generate(tiny_model, [1], 30, rng=rng).tolist() == a.tolist()
    assert generate(tiny_model, [1], 30, rng=rng).tolist() != a.tolist()  # the rng moved on


def test_bad_arguments_are_clear(tiny_model: GPT) -> None:
    with pytest.raises(ValueError, match="max_new_tokens must be a whole number >= 0"):
        generate(tiny_model, [1], -1)
    with pytest.raises(ValueError, match="seed or rng, not both"):
        generate(tiny_model, [1], 3, seed=1, rng=np.random.default_rng(1))
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        generate(tiny_model, [1], 3, rng=np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be a whole number >= 0"):
        generate(tiny_model, [1], 3, seed=-5)
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
        generate(tiny_model, [1], 3, top_p=0)
    with pytest.raises(ValueError, match="num_samples must be a whole number >= 1"):
        generate_batch(tiny_model, [[1]], 3, num_samples=0)
    with pytest.raises(ValueError, match="eos_id must be a token id in"):
        generate(tiny_model, [1], 3, eos_id=67)
    with pytest.raises(ValueError, match="generate_batch"):
        generate(tiny_model, [[1, 2], [3, 4]], 3)
    with pytest.raises(ValueError, match="out of range"):
        generate(tiny_model, [1, 99], 3)
    with pytest.raises(ValueError, match="prompts must be a non-empty list"):
        generate_batch(tiny_model, [], 3)


def test_zero_new_tokens_and_empty_prompts(tiny_model: GPT) -> None:
    assert generate(tiny_model, [4, 5], 0).tolist() == [4, 5]
    # An empty prompt starts from <|endoftext|> (here id 66), which is not returned.
    start = generate(tiny_model, [], 6, temperature=0, eos_id=66)
    assert start.tolist() == generate(tiny_model, [66], 6, temperature=0, eos_id=66)[1:].tolist()
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        generate(tiny_model, [], 3)


# ------------------------------------------------------------------------------------------------
# Text in, text out


def test_complete_is_the_decoded_new_ids() -> None:
    tok, model = byte_tokenizer(), byte_model()
    prompt = "hello the"
    ids = tok.encode(prompt)
    out = generate(model, ids, 20, seed=9, eos_id=tok.eot_id)
    new = [i for i in out[len(ids) :].tolist() if i != tok.eot_id]
    assert complete(model, tok, prompt, max_new_tokens=20, seed=9) == tok.decode(new)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30))
def test_the_stream_always_adds_up_to_the_decoded_text(seed: int, n: int) -> None:
    # A random byte-level model writes random bytes: split characters and invalid UTF-8 both.
    tok, model = byte_tokenizer(), byte_model()
    steps = list(stream(model, tok, "a", max_new_tokens=n, seed=seed, temperature=1.5))
    new = [s.token_id for s in steps if s.token_id != tok.eot_id]
    assert "".join(s.text for s in steps) == tok.decode(new)
    assert [s.index for s in steps] == list(range(len(steps)))
    assert steps[-1].finish_reason in ("stop", "length")
    assert all(s.finish_reason is None for s in steps[:-1])


@pytest.mark.parametrize("use_gpt2", [False, True])
def test_streaming_holds_split_characters_back(
    request: pytest.FixtureRequest, use_gpt2: bool
) -> None:
    if use_gpt2:
        request.getfixturevalue("tiktoken_gpt2")
        tok = Tokenizer.gpt2()
    else:
        tok = byte_tokenizer()
    text = "Hi 👋🏽 世界! 🎉 你好, naïve café ✓"
    ids = tok.encode(text)
    pieces = [tok.encoding.decode_single_token_bytes(i) for i in ids]
    assert any(_not_utf8(p) for p in pieces), "the test needs characters split across tokens"
    model = Scripted([*ids, tok.eot_id], tok.n_vocab)
    steps = list(stream(model, tok, "x", max_new_tokens=100, temperature=0))  # type: ignore[arg-type]
    assert "".join(s.text for s in steps) == text
    assert all("\ufffd" not in s.text for s in steps)  # never half a character
    held = [s for s, p in zip(steps, pieces, strict=False) if _not_utf8(p) and s.text == ""]
    assert held, "some steps must wait for the rest of their character"
    assert steps[-1].token_id == tok.eot_id and steps[-1].text == ""
    assert steps[-1].finish_reason == "stop" and len(steps) == len(ids) + 1


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_eos_ends_the_text_and_is_not_shown() -> None:
    tok = byte_tokenizer()
    model = Scripted([*tok.encode("Hi there"), tok.eot_id, *tok.encode("more")], tok.n_vocab)
    steps = list(stream(model, tok, "x", max_new_tokens=50, temperature=0))  # type: ignore[arg-type]
    assert "".join(s.text for s in steps) == "Hi there"
    assert steps[-1].token_id == tok.eot_id and steps[-1].finish_reason == "stop"
    assert steps[-1].token == "<|endoftext|>"


def test_length_is_the_finish_reason_at_max_new_tokens() -> None:
    tok, model = byte_tokenizer(), byte_model()
    steps = list(stream(model, tok, "the", max_new_tokens=4, temperature=0))
    assert len(steps) == 4 and steps[-1].finish_reason == "length"


def test_stop_strings_split_across_tokens_end_the_text() -> None:
    tok = byte_tokenizer()
    text = "So the answer is 42.\nQ: next"
    model = Scripted([*tok.encode(text), tok.eot_id], tok.n_vocab)
    # "\nQ:" is three single-byte tokens; " the" is one token; "42." spans 3.
    for stop, expected in [("\nQ:", "So the answer is 42."), ("42.", "So the answer is ")]:
        model.calls = 0
        steps = list(stream(model, tok, "x", max_new_tokens=50, stop=stop, temperature=0))  # type: ignore[arg-type]
        assert "".join(s.text for s in steps) == expected
        assert steps[-1].finish_reason == "stop"
        # generation stops at the token that completes the stop string, not later
        assert len(tok.decode([s.token_id for s in steps])) == len(expected) + len(stop)
    model.calls = 0
    several = complete(model, tok, "x", max_new_tokens=50, stop=["zzz", "is 4"], temperature=0)  # type: ignore[arg-type]
    assert several == "So the answer "
    model.calls = 0
    assert complete(model, tok, "x", max_new_tokens=50, stop="never", temperature=0) == text  # type: ignore[arg-type]


def test_stop_strings_with_a_real_model_and_gpt2_tokens(tiktoken_gpt2: None) -> None:
    tok = Tokenizer.gpt2()
    model = GPT(GPTConfig(vocab_size=50257, n_ctx=64, n_layer=1, n_head=2, n_embd=16), seed=0)
    steps = list(stream(model, tok, "Once upon a time", max_new_tokens=30, seed=5))
    full = "".join(s.text for s in steps)
    # a stop string made of the end of one token and the start of the next
    k = next(
        i
        for i in range(len(steps) - 1)
        if len(steps[i].token.strip()) >= 2
        and len(steps[i + 1].token) >= 2
        and "\ufffd" not in steps[i].token + steps[i + 1].token
    )
    stop = steps[k].token[-2:] + steps[k + 1].token[:2]
    cut = complete(model, tok, "Once upon a time", max_new_tokens=30, seed=5, stop=stop)
    assert cut == full[: full.index(stop)]


def _reference_stop(text: str, stops: list[str]) -> str:
    """Write ``text`` one character at a time; stop as soon as any stop string is complete."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            return text[: end - max(len(s) for s in done)]
    return text


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab\n.", max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=10),
    stops=st.lists(st.text(alphabet="ab\n.", min_size=1, max_size=4), min_size=1, max_size=3),
)
def test_stop_rule_does_not_depend_on_how_text_is_split(
    text: str, cuts: list[int], stops: list[str]
) -> None:
    out = TextStream(stops)
    shown = ""
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    for a, b in itertools.pairwise(bounds):
        piece, stopped = out.feed(text[a:b].encode())
        shown += piece
        if stopped:
            break
    else:
        shown += out.flush()
    assert shown == _reference_stop(text, stops)


def test_complete_batch_equals_one_at_a_time() -> None:
    tok, model = byte_tokenizer(), byte_model()
    prompts = ["the", "hello there, how", "", "a"]
    batch = complete_batch(model, tok, prompts, max_new_tokens=12, temperature=0)
    assert batch == [complete(model, tok, p, max_new_tokens=12, temperature=0) for p in prompts]
    samples = complete_batch(model, tok, "the", max_new_tokens=12, num_samples=3, seed=1)
    assert len(samples) == 3 and len(set(samples)) > 1


def test_steps_carry_probabilities_and_logprobs() -> None:
    tok, model = byte_tokenizer(), byte_model(dtype=np.float64)
    prompt = "hello"
    z = model(np.asarray(tok.encode(prompt)))[-1]  # (V,) raw logits at the last position
    logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
    first = next(iter(stream(model, tok, prompt, max_new_tokens=1, seed=0, top_n=3)))
    assert first.logprob == pytest.approx(logp[first.token_id], abs=1e-9)
    assert first.prob == pytest.approx(np.exp(logp[first.token_id]), rel=1e-9)  # no filters
    best3 = np.argsort(-logp, kind="stable")[:3]
    assert [i for i, _, _ in first.top_logprobs] == best3.tolist()
    np.testing.assert_allclose([lp for _, _, lp in first.top_logprobs], logp[best3], atol=1e-9)
    assert [i for i, _, _ in first.top] == best3.tolist()
    # with top_k = 2, the drawn distribution is the top two, renormalised; logprobs stay raw
    s = next(iter(stream(model, tok, prompt, max_new_tokens=1, seed=0, top_k=2, top_n=3)))
    two = np.exp(logp[best3[:2]]) / np.exp(logp[best3[:2]]).sum()
    assert [i for i, _, _ in s.top] == best3[:2].tolist()
    np.testing.assert_allclose([p for _, _, p in s.top], two, rtol=1e-9)
    assert s.logprob == pytest.approx(logp[s.token_id], abs=1e-9)
    greedy = next(iter(stream(model, tok, prompt, max_new_tokens=1, temperature=0)))
    assert greedy.token_id == best3[0] and greedy.prob == 1.0


def test_batched_stream_reports_each_row() -> None:
    tok, model = byte_tokenizer(), byte_model()
    steps = list(stream(model, tok, ["the", "a b c"], max_new_tokens=5, temperature=0))
    for row in (0, 1):
        mine = [s for s in steps if s.row == row]
        assert [s.index for s in mine] == list(range(5))
        ids = [s.token_id for s in mine]
        expected = generate(model, tok.encode(["the", "a b c"][row]), 5, temperature=0)
        assert ids == expected[-5:].tolist()


def test_tokens_the_tokenizer_cannot_write_are_never_drawn() -> None:
    tok = byte_tokenizer()  # 261 tokens
    model = byte_model(vocab_size=300)  # a padded vocabulary: ids 261..299 mean nothing
    steps = list(stream(model, tok, ["x"] * 8, max_new_tokens=30, seed=0, temperature=3.0))
    assert max(s.token_id for s in steps) < tok.n_vocab


def test_samples_of_one_prompt_read_it_once(tiny_model64: GPT) -> None:
    """Rows with the same prompt (``num_samples``) are read once and their KV cache copied to
    each row: every row then gets the logits that a whole forward pass over its own text gives,
    at the first step and after the rows have gone their own ways (with left padding too)."""
    batches: list[int] = []

    class Counting:  # the model, noting how many rows each forward pass reads
        def __getattr__(self, name: str) -> object:
            return getattr(tiny_model64, name)

        def __call__(self, ids: np.ndarray, **kwargs: object) -> np.ndarray:
            batches.append(len(ids))
            return tiny_model64(ids, **kwargs)  # type: ignore[arg-type]

    prompts = [[5, 6, 7], [1, 2, 3, 4, 5], [5, 6, 7], [5, 6, 7]]
    context = Context(Counting(), prompts)  # type: ignore[arg-type]
    for step in range(4):
        logits = context.next_logits()
        for b, row in enumerate(context.rows):
            alone = tiny_model64(np.array(row))[-1]
            np.testing.assert_allclose(logits[b], alone, rtol=0, atol=1e-12)
        context.append(np.array([10 + step, 20, 30 + step, 40]))
    assert batches == [2, 4, 4, 4]  # two different prompts read, then four rows a step
    sampled = generate_batch(tiny_model64, [[5, 6, 7]], 12, num_samples=3, seed=1)
    assert len({tuple(s) for s in sampled}) == 3  # the copies are samples of their own
