"""What the docs show of SmolLM2 is what SmolLM2 prints (the essay on a real model, issue 16).

A SmolLM2 block of a docs page, ```python title="SmolLM2 (after numpylm download smollm2)"
(the title shows on the site), is followed by a ```text block: what the code printed.
tests/test_docs.py leaves these blocks alone (and the docs build does not run them: they need
``numpylm download smollm2``); here they run, each page's blocks in order in one namespace, on
the session's one SmolLM2 (``numpylm.load("smollm2")`` returns the ``smollm2_model`` fixture, so
the 98 MB file is read once for all the tests), and each must print exactly its text block.
Where the file is absent (a fresh clone) they skip, saying so. The runs are greedy or seeded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import numpylm

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md"))
OPENING = '```python title="SmolLM2'
PAIR = re.compile(rf'^{OPENING}[^"\n]*"\n(.*?)^```\n+```text\n(.*?)^```$', re.M | re.S)


def shown(path: Path) -> list[tuple[str, str]]:
    """(code, output) for each SmolLM2 block and the ```text block after it."""
    return PAIR.findall(path.read_text(encoding="utf-8"))


CASES = [p for p in PAGES if shown(p)]


def test_there_are_smollm2_blocks() -> None:
    names = {p.name for p in CASES}
    assert {"attention.md", "sampling.md"} <= names, names
    text = "".join(p.read_text(encoding="utf-8") for p in PAGES)
    assert text.count(OPENING) == sum(len(shown(p)) for p in CASES)  # all paired


@pytest.mark.slow  # sampling.md's 100 answers: 20 to 40 s on 2 cores
@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_the_smollm2_blocks_print_what_is_shown(
    path: Path,
    smollm2_model: tuple[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = numpylm.load
    monkeypatch.setattr(
        numpylm, "load", lambda name=None: smollm2_model if name == "smollm2" else real(name)
    )
    namespace: dict[str, object] = {"__name__": "__main__"}
    for i, (code, output) in enumerate(shown(path), start=1):
        exec(compile(code, f"{path.name}: smollm2 block {i}", "exec"), namespace)
        assert capsys.readouterr().out == output, f"{path.name}: smollm2 block {i}"


def test_the_one_token_page_names_smollm2s_tokens(smollm2_model: tuple[Any, Any]) -> None:
    """docs/guide/one-token-at-a-time.md: its vocabulary holds the essay's words whole."""
    _, tok = smollm2_model
    for word in (" George", " Washington", " president"):
        assert tok.tokens(word) == [word]
    assert tok.n_vocab == 49_152
    page = " ".join((ROOT / "docs/guide/one-token-at-a-time.md").read_text("utf-8").split())
    assert "SmolLM2's 49,152 tokens, below, include all three as single tokens" in page
