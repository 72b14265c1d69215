"""Text in, text out, as it is written: ``stream``, ``complete`` and ``complete_batch``.

Built on the B-row loop of ``batching.sample_steps``, this layer turns token ids into text that
is safe to show as it comes, and reports each token with its probability and the alternatives:

- whole characters only: a character may be split across tokens (an emoji is 4 UTF-8 bytes,
  often 2 or 3 tokens), so bytes wait until their character is complete (``TextStream``);
- stop strings: text that could be the start of a stop string waits until it is clear whether
  the stop string follows, and a sequence ends just before it, as in the OpenAI API;
- log-probabilities under the raw model and the most likely alternatives (``logprobs``);
- a chat model's own format: when the tokenizer has a chat template (SmolLM2's), a prompt is
  asked as a user's message in it, and a row ends at any of ``tokenizer.end_of_turn_ids``
  (``<|im_end|>`` as well as ``<|endoftext|>``; GPT-2's tokenizers: ``<|endoftext|>`` alone).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from ..checks import whole_number
from ..models.family import LanguageModel
from ..sampling import log_softmax
from ..tokens.tokenizer import Tokenizer
from .batching import Sampled, non_empty, sample_steps, split_options
from .context import check_memory

Alternative = tuple[int, str, float]
"""A token the model could have chosen: ``(id, its text, its probability or log-probability)``."""

Conversation = Sequence[Mapping[str, Any]]
"""A chat: messages with ``role`` ("system", "user", "assistant") and ``content``."""
Prompt = str | Conversation
"""What a model is asked: text, or a conversation (written in the tokenizer's chat template)."""


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
        finish_reason: None while the row goes on; ``"stop"`` (an end token of
            ``tokenizer.end_of_turn_ids``, or a stop string) or ``"length"``
            (``max_new_tokens`` reached) on its last step.
    """

    row: int
    index: int
    token_id: int
    token: str
    text: str
    prob: float
    top: list[Alternative] = field(default_factory=list)
    logprob: float = 0.0
    top_logprobs: list[Alternative] = field(default_factory=list)
    finish_reason: str | None = None


def stream(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: Prompt | Sequence[Prompt],
    *,
    max_new_tokens: int = 50,
    stop: str | Sequence[str] | None = None,
    num_samples: int = 1,
    top_n: int = 5,
    chat: bool | None = None,
    **options: Any,
) -> Iterator[Step]:
    """Generate text and report each token as it is written.

    Args:
        model: the language model.
        tokenizer: the tokenizer it was trained with.
        prompt: the text to continue, or several (run as one batch). An empty prompt starts
            from ``<|endoftext|>``. A conversation (a list of messages, see ``Conversation``)
            is written in the tokenizer's chat template, ending with the start of the
            assistant's turn.
        max_new_tokens: how many tokens to write at most per sequence.
        stop: a string, or several, that end a sequence where they appear (also across token
            boundaries); the text stops just before it, as in the OpenAI API.
        num_samples: continue each prompt this many times (as one batch).
        top_n: how many alternatives ``Step.top`` and ``Step.top_logprobs`` hold.
        chat: ask a text prompt as a user's message in the tokenizer's chat template (True),
            or continue the text as it is (False). None (the default): as a message when the
            tokenizer has a chat template (SmolLM2's does; GPT-2's and the built-in models' do
            not).
        **options: the options of ``generate``: ``seed``, ``rng``, ``use_cache`` and the
            fields of ``Sampler`` (``temperature``, ``top_k``, ...).

    Yields:
        ``Step`` records; with several rows, the rows' steps interleave (see ``Step.row``). An
        end token (``tokenizer.end_of_turn_ids``: ``<|endoftext|>``, and a chat model's end of
        turn) ends a row and adds no text.
    """
    sampler, rng, use_cache = split_options(options)
    stops, top_n = check_stop(stop), whole_number("top_n", top_n)
    texts = [prompt] if is_one_prompt(prompt) else non_empty(cast(Sequence[Prompt], prompt))
    n = whole_number("num_samples", num_samples, 1)
    last = whole_number("max_new_tokens", max_new_tokens) - 1
    asked = [prompt_ids(tokenizer, cast(Prompt, t), chat) for t in texts]
    longest = max(map(len, asked)) + last + 1
    check_memory(model, len(texts) * n, use_cache, sampler.uses_history, positions=longest)
    rows = [list(ids) for ids in asked for _ in range(n)]
    ends = set(tokenizer.end_of_turn_ids)
    out = [TextStream(stops) for _ in rows]
    done = np.zeros(len(rows), dtype=bool)
    steps = sample_steps(model, rows, max_new_tokens, sampler, rng, use_cache, tokenizer.n_vocab)
    for index, sampled in enumerate(steps):
        live = np.flatnonzero(~done)
        for b, (prob, top, logprob, top_logprobs) in zip(
            live, logprobs(tokenizer, sampled, live, top_n), strict=True
        ):
            token_id = int(sampled.ids[b])
            finish = None
            if token_id in ends:
                text, finish = out[b].flush(), "stop"
            else:
                text, hit = out[b].feed(tokenizer.token_bytes(token_id))
                if hit:
                    finish = "stop"
                elif index == last:
                    text, finish = text + out[b].flush(), "length"
            done[b] = finish is not None
            token = tokenizer.token_text(token_id)
            yield Step(
                int(b), index, token_id, token, text, prob, top, logprob, top_logprobs, finish
            )
        if done.all():
            return


def is_one_prompt(prompt: object) -> bool:
    """A text, or one conversation (a list of messages), rather than a list of prompts."""
    if isinstance(prompt, str):
        return True
    return isinstance(prompt, Sequence) and len(prompt) > 0 and isinstance(prompt[0], Mapping)


def uses_chat(tokenizer: Tokenizer, prompt: Prompt, chat: bool | None = None) -> bool:
    """Whether ``prompt`` is asked in the tokenizer's chat template (see ``stream``'s
    ``chat``): a conversation always; a text when ``chat`` says so, or (None) when the
    tokenizer has a template."""
    if not isinstance(prompt, str):
        return True
    return tokenizer.chat_template is not None if chat is None else bool(chat)


def prompt_ids(tokenizer: Tokenizer, prompt: Prompt, chat: bool | None = None) -> list[int]:
    """The ids the model reads for ``prompt``: the text's own (``[eot_id]`` for an empty one,
    GPT-2's start of text), or the conversation (a text is one user's message) written in the
    chat template with the start of the assistant's turn (``uses_chat``)."""
    if not uses_chat(tokenizer, prompt, chat):
        return tokenizer.encode(cast(str, prompt)) or [tokenizer.eot_id]
    return cast(list[int], tokenizer.apply_chat_template(as_conversation(prompt)))


def prompt_text(tokenizer: Tokenizer, prompt: Prompt, chat: bool | None = None) -> str:
    """The text the model reads for ``prompt`` (see ``prompt_ids``), as a person reads it: the
    chat template's rendering, special tokens and all, or the text itself."""
    if not uses_chat(tokenizer, prompt, chat):
        return cast(str, prompt)
    return cast(str, tokenizer.apply_chat_template(as_conversation(prompt), tokenize=False))


def as_conversation(prompt: Prompt) -> Conversation:
    """A text as one user's message; a conversation as it is."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def logprobs(
    tokenizer: Tokenizer, sampled: Sampled, rows: np.ndarray, top_n: int
) -> list[tuple[float, list[Alternative], float, list[Alternative]]]:
    """For each row in ``rows`` of a step: the chosen token's probability and the ``top_n``
    most likely tokens under the distribution it was drawn from (those with probability > 0),
    then its log-probability and the ``top_n`` most likely tokens under the raw model."""
    logp = log_softmax(sampled.logits[rows])  # (b, V) under the raw model
    probs = sampled.probs[rows]  # (b, V) after the samplers
    by_prob, by_logp = top_ids(probs, top_n), top_ids(logp, top_n)
    out = []
    for j, token_id in enumerate(sampled.ids[rows]):
        top = [(int(i), tokenizer.token_text(int(i)), float(probs[j, i])) for i in by_prob[j]]
        out.append(
            (
                float(probs[j, token_id]),
                [t for t in top if t[2] > 0],
                float(logp[j, token_id]),
                [(int(i), tokenizer.token_text(int(i)), float(logp[j, i])) for i in by_logp[j]],
            )
        )
    return out


def complete(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: Prompt,
    *,
    max_new_tokens: int = 50,
    stop: str | Sequence[str] | None = None,
    **options: Any,
) -> str:
    """Continue ``prompt`` and return the new text only (see ``stream`` for the arguments,
    among them ``chat``): a chat model's answer to it, when the tokenizer has a chat
    template."""
    if not is_one_prompt(prompt):
        raise TypeError(
            f"prompt must be a str (or a conversation: a list of messages), got "
            f"{type(prompt).__name__}; for several prompts use complete_batch"
        )
    steps = stream(
        model, tokenizer, prompt, max_new_tokens=max_new_tokens, stop=stop, top_n=0, **options
    )
    return "".join(s.text for s in steps)


def complete_batch(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompts: Prompt | Sequence[Prompt],
    *,
    max_new_tokens: int = 50,
    stop: str | Sequence[str] | None = None,
    num_samples: int = 1,
    **options: Any,
) -> list[str]:
    """Continue several prompts (or one, ``num_samples`` times) as one batch; the new texts,
    ordered prompt by prompt."""
    B = (1 if is_one_prompt(prompts) else len(prompts)) * whole_number(
        "num_samples", num_samples, 1
    )
    texts: dict[int, str] = {}  # not B strings yet: stream first checks that B rows fit
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
        texts[s.row] = texts.get(s.row, "") + s.text
    return [texts.get(b, "") for b in range(B)]


class TextStream:
    """Turns one sequence's token bytes into text that is safe to show as it comes.

    Two things must wait. A character may be split across tokens, so bytes wait until their
    character is complete. And text that could be the beginning of a stop string waits until it
    is clear whether the stop string follows.
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


def top_ids(values: np.ndarray, n: int) -> np.ndarray:
    """(B, V) -> (B, min(n, V)) the ids of the n largest values per row, largest first."""
    V = values.shape[-1]
    n = min(n, V)
    if n == 0:
        return np.zeros((values.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-values, n - 1, axis=-1)[:, :n] if n < V else np.argsort(-values)
    order = np.argsort(-np.take_along_axis(values, part, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


def check_stop(stop: object) -> list[str]:
    """Stop strings as a list: one string, several, or None (no stop)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return check_stop([stop])
    if isinstance(stop, (bytes, bytearray)) or not isinstance(stop, Sequence):
        raise TypeError(
            f"stop must be a string or a list of strings, got {type(stop).__name__} {stop!r}"
            + ("; decode bytes to text first" if isinstance(stop, (bytes, bytearray)) else "")
        )
    for s in stop:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop must be non-empty strings, got {type(s).__name__} {s!r}")
    return list(stop)
