"""Text generation, one token at a time.

A language model answers with a single token. More precisely, it scores every possible next
token (the logits); a sampler turns the scores into probabilities and draws one. To write a
sentence, append the drawn token to the input and ask again, until enough tokens are written,
the model emits ``<|endoftext|>``, or a stop string appears:

    "Who was the first president?"            -> " The"
    "Who was the first president? The"        -> " first"
    "Who was the first president? The first"  -> " president"   ...

Because the token is *drawn*, the same question gets different answers; ``seed`` (or an
explicit ``np.random.Generator``) makes a run repeatable. The KV cache keeps the keys and values
of what was already read, so each step runs the model over the one new token only.

Three levels, from ids to text:

- ``generate(model, ids, n)``: token ids in, token ids out (``generate_batch`` for several).
- ``complete(model, tokenizer, text)``: text in, the new text out (``complete_batch``).
- ``stream(model, tokenizer, text)``: the new text as it is written, one ``Step`` per token,
  with its probability and the alternatives the model considered.

Context longer than the model's ``n_ctx``: the model reads the last ``n_ctx`` tokens only. GPT-2's
positions are learned, one embedding per position, so the cached keys cannot be shifted along;
once the context is full, every step rebuilds the cache from the last ``n_ctx`` tokens (a full
pass over the window per token: slower, but it never crashes).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict, TypeVar

import numpy as np

from .model import GPT, KVCache
from .sampling import Sampler, TokenHistory, log_softmax
from .sampling._checks import as_int, in_range
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from typing_extensions import Unpack

PromptIds = Sequence[int] | np.ndarray
T = TypeVar("T")


class Options(TypedDict, total=False):
    """The keyword options every generation function takes (see ``generate`` for each)."""

    temperature: float
    top_k: int | None
    top_p: float | None
    min_p: float | None
    repetition_penalty: float
    frequency_penalty: float
    presence_penalty: float
    seed: int | None
    rng: np.random.Generator | None
    use_cache: bool


# ------------------------------------------------------------------------------------------------
# The loop


def generate(
    model: GPT,
    prompt_ids: PromptIds,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """Continue one prompt, a token at a time.

    Args:
        model: the language model.
        prompt_ids: (T,) token ids. Empty is allowed when ``eos_id`` is given: the model then
            starts from ``eos_id`` (GPT-2's ``<|endoftext|>`` also marks the start of a text).
        max_new_tokens: how many tokens to add at most, >= 0.
        temperature: >= 0; 0 is greedy (always the most likely token), 1 samples from the
            model's own distribution.
        top_k: sample among the k most likely tokens only.
        top_p: sample among the most likely tokens holding probability p (nucleus), p in (0, 1].
        min_p: sample among tokens at least ``min_p`` times as likely as the best, in [0, 1].
        repetition_penalty: CTRL's penalty on tokens already in the context (> 0; 1 is off).
        frequency_penalty: OpenAI's penalty per earlier occurrence, in [-2, 2].
        presence_penalty: OpenAI's penalty for having occurred at all, in [-2, 2].
        seed: make the draws repeatable (the same seed gives the same ids).
        rng: or pass a ``np.random.Generator`` to draw from (not both).
        eos_id: stop after this token is produced (it is included in the result).
        use_cache: keep keys and values between steps (the same ids, much faster).

    Returns:
        (T + n,) int64 array: the prompt followed by the ``n <= max_new_tokens`` new ids.

    The samplers run in the order penalties -> temperature -> top-k -> top-p -> min-p, see
    ``numpylm.sampling``.
    """
    sampler = Sampler(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        frequency_penalty=frequency_penalty,
        presence_penalty=presence_penalty,
    )
    prompt = _check_prompt(model, prompt_ids, eos_id)
    context = [*prompt] if prompt else [_start_id(eos_id)]
    new: list[int] = []
    for step in decode(model, [context], max_new_tokens, sampler, make_rng(seed, rng), use_cache):
        new.append(int(step.ids[0]))
        if new[-1] == eos_id:
            break
    return np.asarray(prompt + new, dtype=np.int64)


def generate_batch(
    model: GPT,
    prompts: Sequence[PromptIds],
    max_new_tokens: int,
    *,
    num_samples: int = 1,
    eos_id: int | None = None,
    **options: Unpack[Options],
) -> list[np.ndarray]:
    """Continue several prompts at once, as one batch.

    Prompts of different lengths are padded on the left and masked, with position ids that
    count each row's own tokens, so every row gets exactly what it would get alone (greedy ids
    are identical). ``num_samples`` continues each prompt that many times (B = prompts x
    samples); the rows are ordered prompt by prompt. Options are those of ``generate``.

    Returns:
        B int64 arrays, each a prompt followed by its new ids (up to and including ``eos_id``).
    """
    sampler, rng, use_cache = _options(options)
    checked = [_check_prompt(model, p, eos_id) for p in _non_empty(prompts)]
    n = _check_num_samples(num_samples)
    rows = [p for p in checked for _ in range(n)]
    contexts = [p or [_start_id(eos_id)] for p in rows]
    new: list[list[int]] = [[] for _ in rows]
    done = np.zeros(len(rows), dtype=bool)
    for step in decode(model, contexts, max_new_tokens, sampler, rng, use_cache):
        for b in np.flatnonzero(~done):
            new[b].append(int(step.ids[b]))
        if eos_id is not None:
            done |= step.ids == eos_id
        if done.all():
            break
    return [np.asarray(p + n, dtype=np.int64) for p, n in zip(rows, new, strict=True)]


@dataclass(frozen=True)
class Draw:
    """What one step of ``decode`` produced, for all B sequences.

    Attributes:
        ids: (B,) the chosen tokens.
        probs: (B, V) the distribution each token was drawn from (after the samplers).
        logits: (B, V) the model's raw scores.
    """

    ids: np.ndarray
    probs: np.ndarray
    logits: np.ndarray


def decode(
    model: GPT,
    contexts: Sequence[Sequence[int]],
    max_new_tokens: int,
    sampler: Sampler,
    rng: np.random.Generator,
    use_cache: bool = True,
    n_vocab: int | None = None,
) -> Iterator[Draw]:
    """The generation loop for B sequences: the story's idea, line by line.

    Args:
        model: the language model.
        contexts: B non-empty lists of token ids.
        max_new_tokens: how many steps to run at most (stop iterating to end sooner).
        sampler: how a token is chosen from the logits.
        rng: where the random numbers come from (B uniforms per step).
        use_cache: read each token once (True) or re-read the whole context every step.
        n_vocab: if given, tokens with ids >= n_vocab (padding rows of a model whose vocabulary
            is larger than its tokenizer's) are never drawn.

    Yields:
        One ``Draw`` per step. Every sequence gets a token at every step; it is the caller who
        decides that a sequence has ended (EOS, a stop string) and ignores the rest.
    """
    max_new_tokens = _check_max_new_tokens(max_new_tokens)
    context = _Context(model, contexts, use_cache)
    history = TokenHistory(contexts, model.config.vocab_size) if sampler.uses_history else None
    for _ in range(max_new_tokens):
        logits = context.next_logits()  # 1. run the model: scores for the next token, (B, V)
        if n_vocab is not None and n_vocab < logits.shape[-1]:
            logits[:, n_vocab:] = -np.inf
        ids, probs = sampler.sample(logits, rng, history)  # 2. choose one token per sequence
        context.append(ids)  # 3. append it: the answer so far is part of the next question
        if history is not None:
            history.add(ids)
        yield Draw(ids, probs, logits)


class _Context:
    """The B token sequences the model reads, and the KV cache over them."""

    def __init__(self, model: GPT, contexts: Sequence[Sequence[int]], use_cache: bool) -> None:
        self.model = model
        self.rows = [list(c) for c in contexts]
        self.use_cache = use_cache
        self.cache: KVCache | None = None

    def append(self, ids: np.ndarray) -> None:
        for row, i in zip(self.rows, ids, strict=True):
            row.append(int(i))

    def next_logits(self) -> np.ndarray:
        """(B, V) the next-token logits of every sequence."""
        n_ctx = self.model.config.n_ctx
        if self.cache is not None and self.cache.length < n_ctx:
            # The cache holds everything but the newest token: run the model on that one.
            newest = np.asarray([[row[-1]] for row in self.rows])  # (B, 1)
            return self.model(newest, cache=self.cache, last_only=True)[:, -1]
        # Read the whole context: at the first step, at every step without a cache, and when
        # the cache is full (then the window moves on by one token and the cache is rebuilt).
        windows = [row[-n_ctx:] for row in self.rows]
        T = max(len(w) for w in windows)
        ids = np.zeros((len(windows), T), dtype=np.int64)  # (B, T), left-padded with id 0
        mask = np.zeros((len(windows), T), dtype=bool)  # True for real tokens
        for b, w in enumerate(windows):
            ids[b, T - len(w) :] = w
            mask[b, T - len(w) :] = True
        self.cache = self.model.new_cache(len(windows)) if self.use_cache else None
        padded = None if mask.all() else mask
        return self.model(ids, cache=self.cache, attention_mask=padded, last_only=True)[:, -1]


# ------------------------------------------------------------------------------------------------
# Text in, text out


@dataclass(frozen=True)
class Step:
    """One generated token, as ``stream`` reports it.

    Attributes:
        row: which sequence (0 unless several prompts or ``num_samples`` > 1).
        index: the token's place among the new tokens of its row (0 for the first).
        token_id: the chosen token.
        token: the token's own text (a piece of a multi-byte character shows as U+FFFD).
        text: the new text this step reveals. Whole characters only, and nothing that could be
            the start of a stop string, so it may be ``""`` and a later step may carry it; the
            ``text`` of a row's steps joined together is exactly its final text.
        prob: the token's probability under the distribution it was drawn from.
        top: the ``top_n`` most likely tokens of that distribution as ``(id, token, prob)``,
            most likely first (only tokens with probability > 0).
        logprob: the token's log-probability under the raw model (no samplers), as the
            OpenAI API's ``logprobs``.
        top_logprobs: the ``top_n`` most likely tokens under the raw model as
            ``(id, token, logprob)``.
        finish_reason: None while the row goes on; ``"stop"`` (the end-of-text token or a stop
            string) or ``"length"`` (``max_new_tokens`` reached) on its last step.
    """

    row: int
    index: int
    token_id: int
    token: str
    text: str
    prob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)
    logprob: float = 0.0
    top_logprobs: list[tuple[int, str, float]] = field(default_factory=list)
    finish_reason: str | None = None


def stream(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str | Sequence[str],
    *,
    max_new_tokens: int = 50,
    stop: str | Sequence[str] | None = None,
    num_samples: int = 1,
    top_n: int = 5,
    **options: Unpack[Options],
) -> Iterator[Step]:
    """Generate text and report each token as it is written.

    Args:
        model: the language model.
        tokenizer: the tokenizer it was trained with.
        prompt: the text to continue, or several (run as one batch). An empty prompt starts
            from ``<|endoftext|>``.
        max_new_tokens: how many tokens to write at most per sequence.
        stop: a string, or several, that end a sequence where they appear (also across token
            boundaries); the text stops just before it, as in the OpenAI API.
        num_samples: continue each prompt this many times (as one batch).
        top_n: how many alternatives ``Step.top`` and ``Step.top_logprobs`` hold.
        **options: the sampling options of ``generate`` (temperature, top_k, ..., seed, rng,
            use_cache).

    Yields:
        ``Step`` records; with several rows, the rows' steps interleave (see ``Step.row``). The
        end-of-text token ends a row and adds no text.
    """
    sampler, rng, use_cache = _options(options)
    stops = _check_stop(stop)
    top_n = as_int("top_n", top_n)
    in_range("top_n", top_n, "a whole number >= 0", top_n >= 0)
    texts = [prompt] if isinstance(prompt, str) else _non_empty(prompt)
    n = _check_num_samples(num_samples)
    rows = [ids for t in texts for ids in [tokenizer.encode(t) or [tokenizer.eot_id]] * n]
    out = [_TextStream(stops) for _ in rows]
    done = np.zeros(len(rows), dtype=bool)
    last = _check_max_new_tokens(max_new_tokens) - 1
    steps = decode(model, rows, max_new_tokens, sampler, rng, use_cache, tokenizer.n_vocab)
    for index, draw in enumerate(steps):
        live = np.flatnonzero(~done)
        logp = log_softmax(draw.logits[live])  # (b, V) under the raw model
        top_p = _top(draw.probs[live], top_n)
        top_lp = _top(logp, top_n)
        for j, b in enumerate(live):
            tid = int(draw.ids[b])
            finish = None
            if tid == tokenizer.eot_id:
                text, finish = out[b].flush(), "stop"
            else:
                text, hit = out[b].feed(tokenizer.encoding.decode_single_token_bytes(tid))
                if hit:
                    finish = "stop"
                elif index == last:
                    text, finish = text + out[b].flush(), "length"
            done[b] = finish is not None
            yield Step(
                row=int(b),
                index=index,
                token_id=tid,
                token=token_text(tokenizer, tid),
                text=text,
                prob=float(draw.probs[b, tid]),
                top=[
                    (int(i), token_text(tokenizer, int(i)), float(draw.probs[b, i]))
                    for i in top_p[j]
                    if draw.probs[b, i] > 0
                ],
                logprob=float(logp[j, tid]),
                top_logprobs=[
                    (int(i), token_text(tokenizer, int(i)), float(logp[j, i])) for i in top_lp[j]
                ],
                finish_reason=finish,
            )
        if done.all():
            return


def complete(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 50,
    stop: str | Sequence[str] | None = None,
    **options: Unpack[Options],
) -> str:
    """Continue ``prompt`` and return the new text only (see ``stream`` for the arguments)."""
    if not isinstance(prompt, str):
        raise TypeError(
            f"prompt must be a str, got {type(prompt).__name__}; for several prompts use "
            "complete_batch"
        )
    steps = stream(
        model, tokenizer, prompt, max_new_tokens=max_new_tokens, stop=stop, top_n=0, **options
    )
    return "".join(s.text for s in steps)


def complete_batch(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 50,
    stop: str | Sequence[str] | None = None,
    num_samples: int = 1,
    **options: Unpack[Options],
) -> list[str]:
    """Continue several prompts (or one, ``num_samples`` times) as one batch; the new texts,
    ordered prompt by prompt."""
    n_prompts = 1 if isinstance(prompts, str) else len(prompts)
    texts = [""] * (n_prompts * _check_num_samples(num_samples))
    for s in stream(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        stop=stop,
        num_samples=num_samples,
        top_n=0,
        **options,
    ):
        texts[s.row] += s.text
    return texts


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """A single token's text; bytes that are part of a longer character show as U+FFFD."""
    data = tokenizer.encoding.decode_single_token_bytes(token_id)
    return str(data.decode("utf-8", errors="replace"))


class _TextStream:
    """Turns one sequence's token bytes into text that is safe to show as it comes.

    Two things must wait. A character may be split across tokens (an emoji is 4 UTF-8 bytes,
    often 2 or 3 tokens), so bytes wait until their character is complete. And text that could
    be the beginning of a stop string waits until it is clear whether the stop string follows.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._pending = ""  # decoded, not yet shown

    def feed(self, data: bytes) -> tuple[str, bool]:
        """Add a token's bytes; return the text that is now safe and whether a stop string
        was completed (then the text ends just before it)."""
        self._pending += self._utf8.decode(data)
        return self._release(final=False)

    def flush(self) -> str:
        """The sequence has ended: everything still held back (an incomplete character becomes
        U+FFFD, as ``Tokenizer.decode`` would write it)."""
        self._pending += self._utf8.decode(b"", final=True)
        return self._release(final=True)[0]

    def _release(self, final: bool) -> tuple[str, bool]:
        text = self._pending
        # (end, start) of each stop string's first occurrence: the one completed first wins,
        # the same as if the text had come one character at a time.
        hits = [(i + len(s), i) for s in self._stops if (i := text.find(s)) >= 0]
        if hits:
            self._pending = ""
            return text[: min(hits)[1]], True
        hold = 0 if final else max((_overlap(text, s) for s in self._stops), default=0)
        self._pending = text[len(text) - hold :]
        return text[: len(text) - hold], False


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that is a start of ``stop`` (shorter than it)."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """(B, V) -> (B, min(n, V)) the ids of the n largest values per row, largest first."""
    V = values.shape[-1]
    n = min(n, V)
    if n == 0:
        return np.zeros((values.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-values, n - 1, axis=-1)[:, :n] if n < V else np.argsort(-values)
    order = np.argsort(-np.take_along_axis(values, part, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


# ------------------------------------------------------------------------------------------------
# Argument checks


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
    if seed is not None:
        seed = as_int("seed", seed)
        in_range("seed", seed, "a whole number >= 0", seed >= 0)
    return np.random.default_rng(seed)


def _options(options: Options) -> tuple[Sampler, np.random.Generator, bool]:
    """Split the keyword options into the sampler, the random generator and ``use_cache``."""
    rest = dict(options)
    rng = make_rng(rest.pop("seed", None), rest.pop("rng", None))  # type: ignore[arg-type]
    use_cache = bool(rest.pop("use_cache", True))
    return Sampler(**rest), rng, use_cache  # type: ignore[arg-type]


def _check_prompt(model: GPT, prompt_ids: PromptIds, eos_id: int | None) -> list[int]:
    arr = np.asarray(prompt_ids)
    if arr.ndim != 1:
        raise ValueError(
            f"prompt_ids must be a 1-D sequence of token ids, got shape {arr.shape}; for "
            "several prompts use generate_batch"
        )
    if arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"prompt_ids must be integer token ids, got dtype {arr.dtype}")
    if eos_id is not None:
        eos_id = as_int("eos_id", eos_id)
        V = model.config.vocab_size
        in_range("eos_id", eos_id, f"a token id in [0, {V - 1}]", 0 <= eos_id < V)
    return [int(i) for i in arr]


def _non_empty(prompts: Sequence[T]) -> list[T]:
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of prompts, got {prompts!r}")
    return list(prompts)


def _start_id(eos_id: int | None) -> int:
    """What an empty prompt starts from: the end-of-text token, GPT-2's convention."""
    if eos_id is None:
        raise ValueError(
            "prompt_ids is empty: give at least one token, or eos_id (GPT-2's <|endoftext|>, "
            "id 50256) to start from"
        )
    return eos_id


def _check_max_new_tokens(n: int) -> int:
    n = as_int("max_new_tokens", n)
    in_range("max_new_tokens", n, "a whole number >= 0", n >= 0)
    return n


def _check_num_samples(n: int) -> int:
    n = as_int("num_samples", n)
    in_range("num_samples", n, "a whole number >= 1", n >= 1)
    return n


def _check_stop(stop: str | Sequence[str] | None) -> list[str]:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop must be non-empty strings, got {s!r}")
    return stops
