"""``numpylm generate``: the sampling flags, the trace, streaming, and refused values.

The model is the tiny GPT-2 fixture (``tests/fixtures/tiny-gpt2``), whose greedy continuation
was computed by PyTorch when the fixture was made (``reference.json``). Probabilities in the
trace are checked against a float64 softmax of the model's logits over the whole context.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpylm import GPT, Tokenizer
from numpylm.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-gpt2"
REFERENCE = json.loads((FIXTURE / "reference.json").read_text(encoding="utf-8"))
PROMPT = REFERENCE["prompt"]
GREEDY = REFERENCE["greedy_ids"]


def run(capsys: pytest.CaptureFixture[str], *flags: str, prompt: str = PROMPT) -> str:
    assert main(["generate", prompt, "--model", str(FIXTURE), *flags]) == 0
    return capsys.readouterr().out


def softmax64(model: GPT, ids: list[int]) -> np.ndarray:
    z = model(np.asarray(ids))[-1].astype(np.float64)  # (V,) the whole context, no cache
    e = np.exp(z - z.max())
    return e / e.sum()


QUOTED = r'"(?:[^"\\]|\\.)*"'
LINE = re.compile(
    rf"^(\d+)\. ({QUOTED}) -> ({QUOTED}|<\|endoftext\|>) \(([\d.]+)%\)   alternatives: (.*)$"
)


def test_trace_shows_each_step_of_the_greedy_answer(capsys: pytest.CaptureFixture[str]) -> None:
    n = 6
    out = run(capsys, "--trace", "--temperature", "0", "--max-new-tokens", str(n))
    lines = out.splitlines()
    assert len(lines) == n + 1
    model, tok = GPT.from_pretrained(FIXTURE), Tokenizer.from_pretrained(FIXTURE)
    prompt_ids = tok.encode(PROMPT)
    for i, line in enumerate(lines[:n]):
        m = LINE.match(line)
        assert m, line
        number, context, token, percent, alternatives = m.groups()
        chosen = GREEDY[i]  # PyTorch's greedy choice at this step
        assert int(number) == i + 1
        assert json.loads(context) == PROMPT + tok.decode(GREEDY[:i])
        assert json.loads(token) == tok.token_text(chosen)
        probs = softmax64(model, prompt_ids + GREEDY[:i])
        assert float(percent) == pytest.approx(100 * probs[chosen], abs=0.051)
        alts = re.findall(rf"({QUOTED}) ([\d.]+)%", alternatives)
        others = sorted((p for j, p in enumerate(probs) if j != chosen), reverse=True)[:4]
        assert [float(p) for _, p in alts] == pytest.approx([100 * p for p in others], abs=0.051)
    assert lines[-1] == "Response: " + json.dumps(tok.decode(GREEDY[:n]), ensure_ascii=False)


def test_trace_from_python_has_the_same_records() -> None:
    import numpylm

    model, tok = GPT.from_pretrained(FIXTURE), Tokenizer.from_pretrained(FIXTURE)
    t = numpylm.trace(model, tok, PROMPT, max_new_tokens=4, temperature=0)
    assert [s.step.token_id for s in t.steps] == GREEDY[:4]
    assert [s.number for s in t.steps] == [1, 2, 3, 4]
    assert t.steps[0].context == PROMPT
    assert t.response == tok.decode(GREEDY[:4])
    assert str(t).splitlines()[-1].startswith("Response: ")
    assert all(len(s.alternatives) == 4 for s in t.steps)


def test_streamed_and_unstreamed_output_agree(capsys: pytest.CaptureFixture[str]) -> None:
    expected = PROMPT + Tokenizer.from_pretrained(FIXTURE).decode(GREEDY) + "\n"
    assert run(capsys, "-t", "0", "-n", "8") == expected
    assert run(capsys, "-t", "0", "-n", "8", "--no-stream") == expected
    seeded = run(capsys, "--seed", "3", "-n", "12", "--top-k", "20", "--top-p", "0.9")
    assert seeded == run(capsys, "--seed", "3", "-n", "12", "--top-k", "20", "--top-p", "0.9")
    assert seeded != run(capsys, "--seed", "4", "-n", "12", "--top-k", "20", "--top-p", "0.9")
    assert seeded.startswith(PROMPT)


def test_prompt_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = run(capsys, "-t", "0", "-n", "5")
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT + "\n"))
    assert run(capsys, "-t", "0", "-n", "5", prompt="-") == direct


def test_stop_strings_and_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    text = Tokenizer.from_pretrained(FIXTURE).decode(GREEDY)
    assert "~~" in text
    expected = PROMPT + text[: text.index("~~")] + "\n"
    assert run(capsys, "-t", "0", "-n", "8", "--stop", "~~") == expected
    assert run(capsys, "-t", "0", "-n", "8", "--stop", r"\x7e\x7e", "--stop", "zz") == expected


def test_num_samples(capsys: pytest.CaptureFixture[str]) -> None:
    greedy = Tokenizer.from_pretrained(FIXTURE).decode(GREEDY[:5])
    out = run(capsys, "-t", "0", "-n", "5", "--num-samples", "3")
    blocks = re.split(r"--- sample \d of 3 ---\n", out)
    assert blocks[0] == "" and blocks[1:] == [PROMPT + greedy + "\n"] * 3
    sampled = re.split(
        r"--- sample \d of 3 ---\n", run(capsys, "--seed", "1", "--num-samples", "3")
    )
    assert len(set(sampled[1:])) == 3


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["generate", "--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for flag in [
        "--temperature",
        "--top-k",
        "--top-p",
        "--min-p",
        "--repetition-penalty",
        "--frequency-penalty",
        "--presence-penalty",
        "--seed",
        "--stop",
        "--num-samples",
        "--max-new-tokens",
        "--trace",
        "--no-stream",
    ]:
        assert flag in out, flag


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--temperature", "-1", "temperature must be 0 (greedy) or a number from 1.18e-38"),
        ("--temperature", "nan", "temperature must be 0 (greedy) or a number from 1.18e-38"),
        ("--temperature", "warm", "expected a number, got 'warm'"),
        ("--top-k", "0", "top_k must be a whole number >= 1"),
        ("--top-k", "2.5", "expected a whole number, got '2.5'"),
        ("--top-p", "0", "top_p must be a number in (0, 1]"),
        ("--top-p", "1.5", "top_p must be a number in (0, 1]"),
        ("--min-p", "-0.1", "min_p must be a number in [0, 1]"),
        ("--repetition-penalty", "0", "repetition_penalty must be a number from 1.18e-38"),
        ("--frequency-penalty", "3", "frequency_penalty must be a number in [-2, 2]"),
        ("--presence-penalty", "-2.5", "presence_penalty must be a number in [-2, 2]"),
        ("--seed", "-1", "must be 0 or more"),
        ("--num-samples", "0", "must be at least 1"),
        ("--max-new-tokens", "0", "must be at least 1"),
    ],
)
def test_bad_values_exit_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["generate", PROMPT, "--model", str(FIXTURE), f"{flag}={value}"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"numpylm generate: error: argument {flag}")
    assert message in err[-1]


def test_trace_refuses_several_samples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["generate", PROMPT, "-m", str(FIXTURE), "--trace", "--num-samples", "2"])
    assert excinfo.value.code == 2
    assert "--trace follows one sequence" in capsys.readouterr().err


def test_bad_value_from_the_shell() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "numpylm", "generate", "Hi", "-m", str(FIXTURE), "--top-p", "2"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "numpylm generate: error: argument --top-p: top_p must be a number in (0, 1], got 2.0"
    )
