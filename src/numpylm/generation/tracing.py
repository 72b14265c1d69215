r"""The trace: watch the model write, one token at a time.

For each step it shows what the model read, the token it chose with its probability, and the
tokens it could have chosen instead, the picture of how an answer comes to be. One line per
step, then the response they add up to:

    N. "<the context>" -> "<the chosen token>" (<its probability>)   alternatives: ...
    Response: "<the new text>"

The probabilities are the model's own (its softmax, before temperature, top-k and the other
samplers), as in the story; ``Step.prob`` has the probability under the distribution the token
was actually drawn from. ``numpylm.trace(...)`` returns the same data as records for notebooks.

Example: the built-in chat model asked the story's question, greedily. Each row's context is cut
to its last 16 characters (``TraceStep.line(width=16)``; ``print(trace)`` keeps 70) and lists
three alternatives, so that the rows fit this page. The output is real: it is what the code
prints, and ``tests/test_doc_outputs.py`` runs the example and compares. The vocabulary cuts
" George" into 4 tokens and " Washington" into 5, so the six-word answer is 16 tokens, and a
17th step chooses ``<|endoftext|>``:

    >>> import numpylm
    >>> from numpylm.training.finetune import format_prompt
    >>> model, tok = numpylm.load("chat")
    >>> prompt = format_prompt("Who was the first president?")  # "Question: ...\nAnswer:"
    >>> trace = numpylm.trace(model, tok, prompt, max_new_tokens=20, temperature=0, alternatives=3)
    >>> for step in trace.steps:
    ...     print(step.line(width=16))
    1. "…sident?\nAnswer:" -> " The" (41.0%)   alternatives: " G" 20.4%, " I" 5.5%, " P" 5.2%
    2. "…nt?\nAnswer: The" -> " first" (100.0%)   alternatives: " che" 0.0%, "ost" 0.0%, " g" 0.0%
    3. "…swer: The first" -> " pres" (100.0%)   alternatives: "ond" 0.0%, "ic" 0.0%, "urd" 0.0%
    4. "… The first pres" -> "id" (100.0%)   alternatives: "ent" 0.0%, "ke" 0.0%, " would" 0.0%
    5. "…he first presid" -> "ent" (100.0%)   alternatives: "id" 0.0%, "ice" 0.0%, "eak" 0.0%
    6. "…first president" -> " was" (100.0%)   alternatives: " is" 0.0%, " G" 0.0%, "," 0.0%
    7. "…t president was" -> " G" (100.0%)   alternatives: " The" 0.0%, " P" 0.0%, " W" 0.0%
    8. "…president was G" -> "e" (100.0%)   alternatives: "res" 0.0%, "ra" 0.0%, "o" 0.0%
    9. "…resident was Ge" -> "or" (100.0%)   alternatives: " W" 0.0%, " too" 0.0%, "oul" 0.0%
    10. "…sident was Geor" -> "ge" (100.0%)   alternatives: "n" 0.0%, "or" 0.0%, "on" 0.0%
    11. "…dent was George" -> " W" (100.0%)   alternatives: " G" 0.0%, "ge" 0.0%, " F" 0.0%
    12. "…nt was George W" -> "as" (100.0%)   alternatives: "ed" 0.0%, "oo" 0.0%, "h" 0.0%
    13. "… was George Was" -> "hing" (100.0%)   alternatives: "k" 0.0%, "as" 0.0%, "sel" 0.0%
    14. "… George Washing" -> "t" (100.0%)   alternatives: " name" 0.0%, "s" 0.0%, "ge" 0.0%
    15. "…George Washingt" -> "on" (100.0%)   alternatives: "as" 0.0%, "aw" 0.0%, "oo" 0.0%
    16. "…orge Washington" -> "." (100.0%)   alternatives: " was" 0.0%, "est" 0.0%, "," 0.0%
    17. "…rge Washington." -> <|endoftext|> (81.9%)   alternatives: " H" 18.1%, "1" 0.0%, " " 0.0%
    >>> trace.response
    ' The first president was George Washington.'

The same table from the command line (contexts cut to 70 characters, four alternatives):
``numpylm generate --model chat "Who was the first president?" --trace --temperature 0``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .. import checks
from ..models.family import LanguageModel
from ..tokens.tokenizer import EOT, Tokenizer
from .streaming import Prompt, Step, prompt_text, stream


@dataclass(frozen=True)
class TraceStep:
    """One row of the trace.

    Attributes:
        number: the step, counting from 1.
        context: the text the model read at this step (the prompt, in the chat template if
            it was asked in one, and the answer so far).
        step: the generated token (see ``numpylm.generation.streaming.Step``).
        alternatives: the most likely other tokens under the model, ``(id, token, prob)``.
    """

    number: int
    context: str
    step: Step
    alternatives: list[tuple[int, str, float]]

    @property
    def prob(self) -> float:
        """The chosen token's probability under the model."""
        return math.exp(self.step.logprob)

    def line(self, width: int | None = 70) -> str:
        """The step as one line of text; a context longer than ``width`` characters shows its
        end only (None: all of it)."""
        context = self.context
        if width is not None and len(context) > width:
            context = "…" + context[len(context) - width + 1 :]
        alts = ", ".join(f"{_quote(t)} {p:.1%}" for _, t, p in self.alternatives) or "none"
        chosen = _quote(self.step.token)
        return (
            f"{self.number}. {_quote(context)} -> {chosen} ({self.prob:.1%})   alternatives: {alts}"
        )


@dataclass(frozen=True)
class Trace:
    """A whole trace: the steps, and the response they add up to.

    ``str(trace)`` is the table, one line per step and a closing ``Response:`` line.
    """

    prompt: str  # the text the model read: in the chat template, if it was asked in one
    steps: list[TraceStep]
    response: str

    def __str__(self) -> str:
        return "\n".join([*(s.line() for s in self.steps), response_line(self.response)])


def iter_trace(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: Prompt,
    *,
    max_new_tokens: int = 20,
    stop: str | Sequence[str] | None = None,
    alternatives: int = 4,
    chat: bool | None = None,
    **options: Any,
) -> Iterator[TraceStep]:
    """Generate from ``prompt`` (one sequence), yielding a ``TraceStep`` as each token is
    chosen. The options are those of ``numpylm.stream`` (``chat``: the prompt is asked in the
    tokenizer's chat template, by default when it has one); ``alternatives`` is how many other
    tokens each step lists (a whole number from 0). The response is the ``step.text`` of the
    steps joined."""
    checks.whole_number("alternatives", alternatives, 0)
    shown = prompt_text(tokenizer, prompt, chat)
    new_ids: list[int] = []
    for s in stream(
        model,
        tokenizer,
        prompt,
        max_new_tokens=max_new_tokens,
        stop=stop,
        top_n=alternatives + 1,
        chat=chat,
        **options,
    ):
        context = shown + tokenizer.decode(new_ids)
        others = [(i, t, math.exp(lp)) for i, t, lp in s.top_logprobs if i != s.token_id]
        yield TraceStep(len(new_ids) + 1, context, s, others[:alternatives])
        new_ids.append(s.token_id)


def trace(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: Prompt,
    *,
    max_new_tokens: int = 20,
    stop: str | Sequence[str] | None = None,
    alternatives: int = 4,
    chat: bool | None = None,
    **options: Any,
) -> Trace:
    """Generate from ``prompt`` and record every step (see ``iter_trace``).

    ``print(numpylm.trace(model, tokenizer, "Who was the first president?"))`` prints the
    table; ``.steps`` holds the records.
    """
    steps = list(
        iter_trace(
            model,
            tokenizer,
            prompt,
            max_new_tokens=max_new_tokens,
            stop=stop,
            alternatives=alternatives,
            chat=chat,
            **options,
        )
    )
    return Trace(prompt_text(tokenizer, prompt, chat), steps, "".join(s.step.text for s in steps))


def response_line(response: str) -> str:
    """The trace's closing line."""
    return f"Response: {_quote(response)}"


def _quote(text: str) -> str:
    """Text in double quotes with newlines and tabs escaped; the end-of-text token bare."""
    return text if text == EOT else json.dumps(text, ensure_ascii=False)
