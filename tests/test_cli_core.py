"""``numpylm generate``: greedy text from a model directory, and clear errors for bad usage.

The expected continuation comes from ``tests/fixtures/tiny-gpt2/reference.json``, computed by
PyTorch with transformers' tokenizer when the fixture was made (no torch needed here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from numpylm import Tokenizer
from numpylm.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-gpt2"
REFERENCE = json.loads((FIXTURE / "reference.json").read_text(encoding="utf-8"))
GREEDY = ["--temperature", "0"]  # the command samples by default; 0 is greedy


def expected_output(n: int) -> str:
    """The prompt and its first ``n`` greedy tokens, as the command prints them."""
    tokenizer = Tokenizer.from_pretrained(FIXTURE)
    assert tokenizer.encode(REFERENCE["prompt"]) == REFERENCE["prompt_ids"]
    new = REFERENCE["greedy_ids"][:n]
    assert tokenizer.eot_id not in new
    return REFERENCE["prompt"] + tokenizer.decode(new) + "\n"


def args(n: int, *extra: str) -> list[str]:
    prompt = REFERENCE["prompt"]
    return ["generate", prompt, "--model", str(FIXTURE), "--max-new-tokens", str(n), *extra]


def run_module(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "numpylm", *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("n", [8, 3])
def test_generate_prints_the_greedy_continuation(
    capsys: pytest.CaptureFixture[str], n: int
) -> None:
    assert main(args(n, *GREEDY)) == 0
    assert capsys.readouterr().out == expected_output(n)


def test_python_dash_m_numpylm_generate() -> None:
    result = run_module(args(8, *GREEDY))
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_output(8)


def test_missing_prompt_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["generate", "--model", str(FIXTURE)])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: numpylm generate")
    assert "PROMPT" in err and "required" in err


def test_bad_model_path_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    assert main(["generate", "Hello", "--model", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("numpylm: error:") and str(missing) in lines[0]


def test_bad_model_path_from_the_shell(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    result = run_module(["generate", "Hello", "--model", str(missing)])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and str(missing) in result.stderr
