"""Every output pasted into a docstring or a docs page is what the code prints (issue 12).

The docstring examples run as doctests. A table pasted into a page sits between
``<!-- output: NAME -->`` and ``<!-- /output: NAME -->`` (invisible in the built site); the test of
NAME runs the code the page describes and compares the text between the markers, exactly (the
runs are greedy or seeded). Blocks that markdown-exec runs at build time need no pasted copy.
"""

from __future__ import annotations

import doctest
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
