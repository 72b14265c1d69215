"""Every ``$ numpylm ...`` command shown in a ```text block of README.md, a model card or
docs/howto, with the output printed under it, is run here, and prints exactly that."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from numpylm.cli import main

ROOT = Path(__file__).resolve().parents[1]
FILES = [
    ROOT / "README.md",
    *sorted((ROOT / "src" / "numpylm" / "builtin").glob("*/MODEL_CARD.md")),
    *sorted((ROOT / "docs" / "howto").glob("*.md")),
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
    path: Path, command: str, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(shlex.split(command)[1:]) == 0
    assert capsys.readouterr().out == output
