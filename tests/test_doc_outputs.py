"""Every output pasted into a docstring or a docs page is what the code prints (issue 12).

The docstring examples run as doctests. A table pasted into a page sits between
``<!-- output: NAME -->`` and ``<!-- /output: NAME -->`` (invisible in the built site); the test of
NAME runs the code the page describes and compares the text between the markers, exactly (the
runs are greedy or seeded). Blocks that markdown-exec runs at build time need no pasted copy.
"""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path

import pytest

import numpylm
from numpylm import tracing
from numpylm.cli import main
from numpylm.finetune import format_prompt

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Who was the first president?"


def pasted(page: str, name: str) -> str:
    """The text between the page's ``<!-- output: name -->`` markers (one pair, no blank ends)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    found = re.findall(rf"<!-- output: {name} -->\n(.*?)\n<!-- /output: {name} -->", text, re.S)
    assert len(found) == 1, f"{page} must hold exactly one output {name!r}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def chat() -> tuple[numpylm.GPT, numpylm.Tokenizer]:
    return numpylm.load("chat")


def test_the_tracing_docstring_shows_what_the_code_prints() -> None:
    tests = doctest.DocTestFinder(exclude_empty=True).find(tracing, "numpylm.tracing")
    examples = sum(len(t.examples) for t in tests)
    assert examples >= 5, "the module docstring's example is gone"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0


def test_the_cli_trace_is_the_printed_trace(
    chat: tuple[numpylm.GPT, numpylm.Tokenizer], capsys: pytest.CaptureFixture[str]
) -> None:
    """``numpylm generate --model chat ... --trace`` prints ``print(numpylm.trace(...))``."""
    model, tok = chat
    trace = numpylm.trace(model, tok, format_prompt(QUESTION), max_new_tokens=60, temperature=0)
    assert main(["generate", "--model", "chat", QUESTION, "--trace", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == f"{trace}\n"
    assert trace.response == " The first president was George Washington."


def _quote(token: str) -> str:
    return "<|endoftext|>" if token == "<|endoftext|>" else json.dumps(token, ensure_ascii=False)


def trace_table(trace: tracing.Trace) -> str:
    """The trace as the markdown table of docs/guide/one-token-at-a-time.md."""
    rows = [
        "| step | what the model reads | next token | its probability | the runner-up |",
        "|---|---|---|---|---|",
    ]
    for s in trace.steps:
        so_far = s.context[len(trace.prompt) :]
        reads = trace.prompt.replace("\n", "\\n") if s.number == 1 else f"…Answer:{so_far}"
        _, alt, p_alt = s.alternatives[0]
        rows.append(
            f"| {s.number} | `{reads}` | `{_quote(s.step.token)}` | {s.prob:.1%} "
            f"| `{_quote(alt)}` {p_alt:.1%} |"
        )
    return "\n".join(rows)


def test_the_one_token_page_shows_the_real_trace(
    chat: tuple[numpylm.GPT, numpylm.Tokenizer],
) -> None:
    model, tok = chat
    trace = numpylm.trace(model, tok, format_prompt(QUESTION), max_new_tokens=30, temperature=0)
    assert pasted("docs/guide/one-token-at-a-time.md", "chat-trace") == trace_table(trace)


def test_the_vocabulary_splits_the_answer_as_the_page_says(
    chat: tuple[numpylm.GPT, numpylm.Tokenizer],
) -> None:
    _, tok = chat
    assert tok.tokens(" George") == [" G", "e", "or", "ge"]
    assert tok.tokens(" Washington") == [" W", "as", "hing", "t", "on"]
    assert tok.tokens(" president") == [" pres", "id", "ent"]
    assert tok.n_vocab == 2048
