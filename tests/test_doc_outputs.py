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
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import numpylm
from numpylm.cli import main
from numpylm.generation import tracing
from numpylm.training.chat_data import (
    PRESIDENT_QUESTION,
    first_word,
    make_chat_data,
    trained_president_shares,
)
from numpylm.training.finetune import evaluate_sft, format_prompt
from numpylm.training.instructions import make_instructions

ROOT = Path(__file__).resolve().parents[1]
QUESTION = PRESIDENT_QUESTION


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
    tests = doctest.DocTestFinder(exclude_empty=True).find(tracing, "numpylm.generation.tracing")
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


def president_table(chat: tuple[numpylm.GPT, numpylm.Tokenizer]) -> str:
    """The first tokens of the chat model's answers, as the table of docs/guide/sampling.md."""
    model, tok = chat
    ask = tok.encode(format_prompt(PRESIDENT_QUESTION))
    logits = model(np.array(ask), last_only=True)[-1]
    probs = numpylm.softmax(logits)
    answers = numpylm.generate_batch(model, [ask], 40, num_samples=100, seed=0, eos_id=tok.eot_id)
    first100 = Counter(tok.decode([int(row[len(ask)])]) for row in answers)
    many, _ = numpylm.Sampler().sample(np.tile(logits, (10_000, 1)), np.random.default_rng(0))
    first10k = Counter(tok.decode([int(t)]) for t in many)
    train = make_chat_data().train
    data = trained_president_shares(train, by=lambda a: tok.tokens(" " + a)[0])
    words = {
        tok.tokens(" " + e.response)[0]: first_word(e.response)
        for e in train
        if e.prompt == PRESIDENT_QUESTION
    }
    rows = [
        "| first token | first word | the model's probability | 100 answers | 10,000 draws "
        "| training data |",
        "|---|---|---|---|---|---|",
    ]
    for i in np.argsort(-probs)[:10]:
        t = tok.decode([int(i)])
        rows.append(
            f"| `{_quote(t)}` | {words[t]} | {probs[i]:.1%} | {first100[t]} "
            f"| {first10k[t] / 100:.1f}% | {data[t]:.1%} |"
        )
    return "\n".join(rows)


def test_the_sampling_page_shows_the_real_shares(
    chat: tuple[numpylm.GPT, numpylm.Tokenizer],
) -> None:
    table = president_table(chat)
    assert pasted("docs/guide/sampling.md", "president-shares") == table
    # the prose under the table: the ten hold 99.7%, and all 100 answers begin with one of them
    model, tok = chat
    probs = numpylm.softmax(model(np.array(tok.encode(format_prompt(QUESTION))))[-1])
    assert f"{np.sort(probs)[-10:].sum():.1%}" == "99.7%"
    assert sum(int(row.split(" | ")[3]) for row in table.splitlines()[2:]) == 100


def test_the_finetuning_page_shows_the_base_models_ramble() -> None:
    model, tok = numpylm.load()
    prompt = format_prompt("Count from 3 to 4.")
    answer = numpylm.complete(model, tok, prompt, max_new_tokens=20, temperature=0)
    assert pasted("docs/finetuning.md", "base-ramble") == f"```text\n{prompt}{answer}\n```"


TASKS = {"count": "Count", "reverse": "Reverse", "compare": "Which", "add": "What"}


def sft_table(chat: tuple[numpylm.GPT, numpylm.Tokenizer]) -> str:
    """Both built-in models on the 200 held-out instruction cases, as in docs/finetuning.md."""
    held_out = make_instructions(4000, 200, seed=0)[
        1
    ]  # python -m numpylm.training.instructions DIR
    rows = [
        "| model | exact match | stops with `<|endoftext|>` | starts with the answer "
        "| count | reverse | compare | add |",
        "|---|---|---|---|---|---|---|---|",
    ]
    models = [
        ("the Shakespeare model, `numpylm.load()`", numpylm.load()),
        ('the chat model, `numpylm.load("chat")`', chat),
    ]
    for name, (model, tok) in models:
        score = evaluate_sft(model, tok, held_out)
        tasks = [
            score.select(i for i, e in enumerate(held_out) if e.prompt.startswith(prefix))
            for prefix in TASKS.values()
        ]
        cells = [score.accuracy, score.stop_rate, score.prefix_accuracy]
        cells += [t.accuracy for t in tasks]
        rows.append(f"| {name} | " + " | ".join(f"{c:.1%}" for c in cells) + " |")
    return "\n".join(rows)


def test_the_finetuning_page_shows_the_real_scores(
    chat: tuple[numpylm.GPT, numpylm.Tokenizer],
) -> None:
    table = sft_table(chat)
    assert pasted("docs/finetuning.md", "sft-scores") == table
    # GitHub's tables need the code span's pipes escaped
    assert pasted("README.md", "sft-scores").replace("\\|", "|") == table


def test_the_training_page_computes_the_built_in_models_scale() -> None:
    model, _ = numpylm.load()
    n = model.num_params()
    d = 1300 * 16 * model.config.n_ctx  # the model card's steps, batch and context
    card = (ROOT / "src/numpylm/builtin/shakespeare/MODEL_CARD.md").read_text(encoding="utf-8")
    page = " ".join((ROOT / "docs/guide/training.md").read_text(encoding="utf-8").split())
    for fact in ["1300 steps of 16 x 256 tokens", f"{n:,}", "26 min 48 s", "1,115,394 characters"]:
        assert fact in card
    flops = f"{6 * n * d:.1e}".replace("+", "")
    assert (n, d, flops) == (3_111_936, 5_324_800, "9.9e13")
    assert f"6 × {n:,} × {d:,} ≈ {flops} FLOPs" in page
    assert f"(3.14e23 / {flops} ≈ {3.14e23 / (6 * n * d):.1e})".replace("+0", "") in page


def test_the_finetuning_page_shows_the_real_bad_lines_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = '{"prompt": "Count from 1 to 2.", "response": "1 2"}'
    lines = [good, good, '{"prompt": "Count from 3 to 7." "response": "3 4 5 6 7"}', good, good]
    lines += [good, '{"prompt": "What is 3 plus 4?", "response": 7}']
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["finetune", "--data", "data.jsonl", "--out", "runs/sft"]) != 0
    shown = pasted("docs/finetuning.md", "bad-lines")
    assert shown == f"```text\n{capsys.readouterr().err}```"
    assert not (tmp_path / "runs").exists()


def first_token_confidence(
    chat: tuple[numpylm.GPT, numpylm.Tokenizer], questions: list[str]
) -> np.ndarray:
    """(N,) the probability of the likeliest first answer token, one per question."""
    model, tok = chat
    return np.array(
        [
            numpylm.softmax(model(np.array(tok.encode(format_prompt(q))), last_only=True)[-1]).max()
            for q in questions
        ]
    )


def test_the_readme_and_card_state_the_measured_confidence(
    chat: tuple[numpylm.GPT, numpylm.Tokenizer],
) -> None:
    """Untaught facts get a lower first-token probability than taught ones in new words: the
    README says by how much, and the model card's table has the same means."""
    data = make_chat_data()
    taught = first_token_confidence(chat, [e.prompt for e in data.reworded])
    untaught = first_token_confidence(chat, [e.prompt for e in data.untaught])
    assert untaught.mean() < taught.mean() - 0.1  # not "just as confident"
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (
        f"a probability of {untaught.mean():.1%} on average over the {len(untaught)} facts it was "
        f"never taught, against {taught.mean():.1%} over the {len(taught)} taught facts" in readme
    )
    card = (ROOT / "src/numpylm/builtin/chat/MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"| {len(taught)} | 51.0% | 51.0% | 100.0% | {taught.mean():.1%} |" in card
    assert f"| {len(untaught)} | 3.3% | 3.3% | 100.0% | {untaught.mean():.1%} |" in card


def greedy_steps(
    chat: tuple[numpylm.GPT, numpylm.Tokenizer], question: str
) -> tuple[list[str], list[float]]:
    """The greedy answer's tokens (with ``<|endoftext|>``) and the probability of each, read
    off one forward pass over the question and the whole answer."""
    model, tok = chat
    ask = tok.encode(format_prompt(question))
    answer = numpylm.generate(model, ask, 24, temperature=0, eos_id=tok.eot_id)[len(ask) :]
    probs = numpylm.softmax(model(np.array(ask + answer.tolist()))[len(ask) - 1 : -1])
    steps = [float(probs[i, t]) for i, t in enumerate(answer)]  # p of each answer token
    return [tok.decode([int(t)]) for t in answer], steps


def test_the_chat_model_card_gives_the_real_probabilities_of_two_wrong_answers(
    chat: tuple[numpylm.GPT, numpylm.Tokenizer],
) -> None:
    card = (ROOT / "src/numpylm/builtin/chat/MODEL_CARD.md").read_text(encoding="utf-8")
    tokyo, p = greedy_steps(chat, "What is the capital of Pakistan?")
    assert tokyo == [" ", "To", "k", "y", "o", ".", "<|endoftext|>"]
    assert f'(first token " " {p[0]:.1%}, whole answer {np.prod(p):.1%})' in card
    unsure = [(t, q) for t, q in zip(tokyo, p, strict=True) if q < 0.9]
    assert unsure == [("y", p[3])]  # the only step below 90%
    assert f'after " Tok" it gives "y" {p[3]:.1%}' in " ".join(card.split())
    goose, p = greedy_steps(chat, "What does a goose say?")
    assert "".join(goose) == " Cock-a-doodle-doo.<|endoftext|>"
    assert f'(first token " C" {p[0]:.1%}, whole answer {np.prod(p):.1%})' in card


def test_the_fine_tunes_time_is_stated_one_way() -> None:
    """The chat model card records the run; the README and the docs repeat it, setting and all."""
    card = (ROOT / "src/numpylm/builtin/chat/MODEL_CARD.md").read_text(encoding="utf-8")
    assert "| time | 12 min 26 s wall clock on a 2-core AMD EPYC, with one BLAS thread" in card
    for page in ["README.md", "docs/finetuning.md"]:
        text = " ".join((ROOT / page).read_text(encoding="utf-8").split())
        assert "12 min 26 s" in text and "one BLAS thread" in text, page
        assert "minutes on one core" not in text, page
