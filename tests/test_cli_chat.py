"""``numpylm chat`` and the built-in model names: questions from standard input or a
pseudo-terminal, answers that stop at <|endoftext|>, Ctrl-D to leave, earlier turns kept only
when asked and dropped, oldest first, when they outgrow the context."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import numpylm
from numpylm import complete
from numpylm.cli import _fit_turns, main
from numpylm.io.loading import BUILTIN_ROOT, builtin_models, load, model_dir
from numpylm.training.finetune import format_example, format_prompt, load_template

QUESTIONS = ["Who was the first president?", "What is the capital of France?"]


def greedy_answer(question: str) -> str:
    """What the chat model answers, through the Python API (an independent path)."""
    model, tokenizer = load("chat")
    prompt = format_prompt(question, load_template("chat") or "")
    return complete(model, tokenizer, prompt, max_new_tokens=64, temperature=0)


def test_built_in_names_come_first_and_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(builtin_models()) == {"shakespeare", "chat"}
    (tmp_path / "chat").mkdir()  # a folder of the same name in the working directory ...
    monkeypatch.chdir(tmp_path)
    assert model_dir("chat") == BUILTIN_ROOT / "chat"  # ... loses to the built-in model
    assert model_dir(None) == BUILTIN_ROOT / "shakespeare"
    assert model_dir("./chat") == "./chat"
    model, _ = numpylm.load("chat")
    assert model.config.n_layer == 6


def test_help_lists_the_built_in_models(capsys: pytest.CaptureFixture[str]) -> None:
    for command, default in (("generate", "shakespeare"), ("chat", "chat")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "built-in models (--model NAME):" in out
        assert "shakespeare" in out and "chat " in out
        flat = " ".join(out.split())  # argparse wraps the help text
        start, end = flat.index("--model NAME_OR_DIR, -m"), flat.index("--max-new-tokens N, -n")
        model_help = flat[start:end]
        assert model_help.count("default") == 1 and f"(default: {default})" in model_help


def test_chat_answers_each_question_from_stdin_as_a_transcript(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(QUESTIONS) + "\n"))
    assert main(["chat", "--temperature", "0"]) == 0  # end of input: leaves with status 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    expected = [greedy_answer(q).lstrip() for q in QUESTIONS]  # without the template's space
    assert lines == [f"> {QUESTIONS[0]}", expected[0], f"> {QUESTIONS[1]}", expected[1]]
    assert lines[1] == "The first president was George Washington."
    assert captured.err == ""


def test_chat_says_which_piped_lines_are_blank(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"\n{QUESTIONS[0]}\n   \n"))
    assert main(["chat", "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"> {QUESTIONS[0]}", greedy_answer(QUESTIONS[0]).lstrip()]
    assert captured.err.splitlines() == [
        "numpylm: input line 1 is blank: nothing asked",
        "numpylm: input line 3 is blank: nothing asked",
    ]


@pytest.mark.parametrize("model", ["shakespeare", "gpt2"])
def test_chat_refuses_a_model_with_no_prompt_template(
    model: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base model was never taught to answer: chat names one that was, and asks nothing."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTIONS[0] + "\n"))
    assert main(["chat", "--model", model]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"numpylm: error: '{model}' has no prompt template")
    assert "--model chat" in captured.err and len(captured.err.splitlines()) == 1
    assert sys.stdin.read() == QUESTIONS[0] + "\n"  # not one question was read


def test_chat_trace_ends_with_the_end_of_text_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTIONS[0] + "\n"))
    assert main(["chat", "--trace", "-t", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"> {QUESTIONS[0]}"  # the question, then one line a step
    assert lines[-2].startswith(f"{len(lines) - 2}. ") and "-> <|endoftext|>" in lines[-2]
    assert lines[-1] == 'Response: " The first president was George Washington."'


def test_earlier_turns_are_kept_only_when_asked_and_the_oldest_go_first() -> None:
    _, tokenizer = load("chat")
    template = load_template("chat") or ""
    turns = [format_example(f"Question number {i}?", f"Answer {i}.", template) for i in range(40)]
    prompt = format_prompt("And now?", template)
    fitted = _fit_turns(turns, prompt, tokenizer, 100)
    assert fitted.endswith(prompt) and len(tokenizer.encode(fitted)) <= 100
    kept = fitted.split("\n\n")[:-1]
    assert kept == turns[len(turns) - len(kept) :] and 0 < len(kept) < len(turns)  # newest kept
    assert _fit_turns([], prompt, tokenizer, 100) == prompt


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_chat_in_a_terminal_prompts_and_leaves_on_ctrl_d() -> None:
    import pty

    leader, follower = pty.openpty()
    chat = subprocess.Popen(
        [sys.executable, "-m", "numpylm", "chat", "-t", "0"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    seen, done = b"", 0  # everything read; how much of it earlier calls matched

    def read_until(needle: bytes, timeout: float = 60) -> None:
        """Read the terminal until ``needle`` appears after the previous match."""
        nonlocal seen, done
        end = time.monotonic() + timeout
        while needle not in seen[done:] and time.monotonic() < end:
            if select.select([leader], [], [], 0.5)[0]:
                try:
                    seen += os.read(leader, 4096)
                except OSError:  # the child has gone
                    break
        assert needle in seen[done:], seen
        done = seen.index(needle, done) + len(needle)

    try:
        read_until(b"numpylm chat, asking the built-in chat model: type a question; Ctrl-D leaves.")
        read_until(b"> ")  # the first prompt
        os.write(leader, QUESTIONS[0].encode() + b"\n")
        read_until(b"George Washington.")
        read_until(b"> ")  # the next prompt, after the answer
        os.write(leader, b"\x04")  # Ctrl-D
        assert chat.wait(timeout=60) == 0
    finally:
        if chat.poll() is None:
            chat.kill()
        os.close(leader)
