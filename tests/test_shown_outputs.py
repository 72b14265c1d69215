"""Every ``$ numpylm ...`` command shown in a ```text block of README.md, a model card,
docs/howto or docs/guide, with the output printed under it, is run here, and prints exactly
that.

A command with ``--model smollm2`` runs on the session's one SmolLM2 (the ``smollm2_model``
fixture, so the file is read once for all the tests), and skips, saying why, where
``numpylm download smollm2`` was never run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from numpylm.cli import main
from numpylm.io import loading

ROOT = Path(__file__).resolve().parents[1]
FILES = [
    ROOT / "README.md",
    *sorted((ROOT / "src" / "numpylm" / "builtin").glob("*/MODEL_CARD.md")),
    *sorted((ROOT / "docs" / "howto").glob("*.md")),
    *sorted((ROOT / "docs" / "guide").glob("*.md")),
]


def shown(path: Path) -> list[tuple[str, str]]:
    """(command, output) for each ``$ numpylm`` line in the file's text blocks."""
    found = []
    for block in re.findall(r"```text\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S):
        parts = re.split(r"^\$ (numpylm .*)\n", block, flags=re.M)
        found += list(zip(parts[1::2], parts[2::2], strict=True))
    return found


CASES = [(p, cmd, out) for p in FILES for cmd, out in shown(p)]


def test_there_are_commands_to_check() -> None:
    assert len(CASES) >= 3


@pytest.mark.parametrize(
    ("path", "command", "output"), CASES, ids=[f"{p.name}: {c}" for p, c, _ in CASES]
)
def test_the_command_prints_what_is_shown(
    path: Path,
    command: str,
    output: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    args = shlex.split(command)[1:]
    if "smollm2" in args:
        smollm2 = request.getfixturevalue("smollm2_model")  # or skip: the file is absent
        real = loading.load
        monkeypatch.setattr(
            loading, "load", lambda name=None: smollm2 if name == "smollm2" else real(name)
        )
    assert main(args) == 0
    assert capsys.readouterr().out == output
