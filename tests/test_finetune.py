"""Supervised fine-tuning: the response-only loss, the template, the JSONL reader, the data
generator, and a short fine-tune that teaches a tiny model a task it then answers on unseen
cases."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from numpylm import GPT, GPTConfig, Tokenizer, train_bpe
from numpylm.cli import main
from numpylm.io.loading import load
from numpylm.training.finetune import (
    TEMPLATE,
    TEMPLATE_FILE,
    DataError,
    Example,
    FinetuneConfig,
    batch_indices,
    encode_example,
    evaluate_sft,
    finetune,
    format_example,
    format_prompt,
    load_template,
    pad_batch,
    read_jsonl,
    resume_config,
    split_template,
    write_jsonl,
)
from numpylm.training.instructions import TASKS, is_held_out, make_instructions

EXAMPLES = [
    Example("Count from 3 to 7.", "3 4 5 6 7"),
    Example("Which is larger, 41 or 17?", "41"),
    Example("Reverse the letters: c a t", "t a c"),
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A small BPE vocabulary learned from the instruction data (no shared data needed)."""
    train, _ = make_instructions(400, 0, seed=1)
    return train_bpe("\n".join(format_example(e.prompt, e.response) for e in train), 300)


# --------------------------------------------------------------------------------------------
# The loss counts the response only


def _independent_loss(model: GPT, x: np.ndarray, y: np.ndarray) -> float:
    """Mean -log p(target) over the positions with a target, from the forward pass alone."""
    logits = model(x)  # (B, T, V)
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    b, t = np.nonzero(y >= 0)
    return float(-logp[b, t, y[b, t]].mean())


def _tiny64(tokenizer: Tokenizer) -> GPT:
    config = GPTConfig(vocab_size=tokenizer.n_vocab, n_ctx=40, n_layer=2, n_head=2, n_embd=8)
    return GPT(config, seed=3, dtype=np.float64)


def test_pad_batch_masks_prompt_and_padding(tokenizer: Tokenizer) -> None:
    rows = [encode_example(tokenizer, e) for e in EXAMPLES]
    x, y = pad_batch(rows, pad_id=tokenizer.eot_id)
    assert x.shape == y.shape == (3, max(len(ids) for ids, _ in rows) - 1)
    for b, (ids, n_prompt) in enumerate(rows):
        counted = np.flatnonzero(y[b] >= 0)
        # exactly the response tokens and the final <|endoftext|> are targets, in order
        assert y[b, counted].tolist() == ids[n_prompt:]
        assert ids[-1] == tokenizer.eot_id
        assert counted[0] == n_prompt - 1  # the last prompt position predicts the first answer
        assert x[b, : len(ids) - 1].tolist() == ids[:-1]
        assert (x[b, len(ids) - 1 :] == tokenizer.eot_id).all()  # right padding


def test_sft_loss_and_gradient_match_finite_differences(tokenizer: Tokenizer) -> None:
    model = _tiny64(tokenizer)
    x, y = pad_batch([encode_example(tokenizer, e) for e in EXAMPLES], tokenizer.eot_id)
    loss, grads = model.loss_and_grads(x, y)
    assert loss == pytest.approx(_independent_loss(model, x, y), rel=1e-12)
    rng = np.random.default_rng(0)
    for name in ("wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.1.mlp.c_fc.bias"):
        p = model.params[name]
        for flat in rng.choice(p.size, size=4, replace=False):
            i = np.unravel_index(flat, p.shape)
            old = p[i]
            p[i] = old + 1e-5
            up = _independent_loss(model, x, y)
            p[i] = old - 1e-5
            down = _independent_loss(model, x, y)
            p[i] = old
            assert grads[name][i] == pytest.approx((up - down) / 2e-5, rel=1e-5, abs=1e-9)


def test_prompt_targets_contribute_no_gradient(tokenizer: Tokenizer) -> None:
    model = _tiny64(tokenizer)
    rows = [encode_example(tokenizer, e) for e in EXAMPLES]
    x, y = pad_batch(rows, tokenizer.eot_id)
    loss, grads = model.loss_and_grads(x, y)
    # the same batch with every target filled in (what plain language-model training scores),
    # restricted by a mask to the response: the prompt's targets can be anything
    mask = y >= 0
    rng = np.random.default_rng(1)
    for _ in range(2):
        y_any = np.where(mask, y, rng.integers(0, tokenizer.n_vocab, size=y.shape))
        loss2, grads2 = model.loss_and_grads(x, y_any, mask)
        assert loss2 == loss
        for name in grads:
            np.testing.assert_array_equal(grads2[name], grads[name])
    # without the mask those prompt targets do count, and the loss moves
    assert model.loss_and_grads(x, y_any)[0] != pytest.approx(loss)


def test_padding_changes_no_example(tokenizer: Tokenizer) -> None:
    """Right padding is invisible: a batch's summed loss is the sum of each example alone."""
    model = _tiny64(tokenizer)
    rows = [encode_example(tokenizer, e) for e in EXAMPLES]
    x, y = pad_batch(rows, tokenizer.eot_id)
    together = model.loss(x, y) * int((y >= 0).sum())
    alone = 0.0
    for row in rows:
        xr, yr = pad_batch([row], tokenizer.eot_id)
        alone += model.loss(xr, yr) * int((yr >= 0).sum())
    assert together == pytest.approx(alone, rel=1e-12)


# --------------------------------------------------------------------------------------------
# The template


def test_template_parts_and_round_trip(tokenizer: Tokenizer) -> None:
    assert split_template(TEMPLATE) == ("Question: {prompt}\nAnswer:", " {response}")
    assert format_prompt("Count from 3 to 7.") == "Question: Count from 3 to 7.\nAnswer:"
    text = format_example("Count from 3 to 7.", "3 4 5 6 7")
    assert text == "Question: Count from 3 to 7.\nAnswer: 3 4 5 6 7"
    for e in [*EXAMPLES, Example("Say {response} and <|endoftext|>", "{prompt} <|endoftext|>")]:
        ids, n_prompt = encode_example(tokenizer, e)
        # the prompt's ids are what generation is given; prompt + answer ids are exactly the
        # encoding of the whole text, so training and generation see the same tokens
        assert ids[:n_prompt] == tokenizer.encode(format_prompt(e.prompt))
        assert ids[:-1] == tokenizer.encode(format_example(e.prompt, e.response))
        assert ids.count(tokenizer.eot_id) == 1 and ids[-1] == tokenizer.eot_id
        assert tokenizer.decode(ids) == format_example(e.prompt, e.response) + "<|endoftext|>"


def test_custom_template_and_bad_templates(tokenizer: Tokenizer) -> None:
    template = "### Instruction:\n{prompt}\n\n### Response:\n{response}"
    assert format_prompt("hi", template) == "### Instruction:\nhi\n\n### Response:"
    assert format_example("hi", "yo", template).endswith("### Response:\nyo")
    for bad in [
        "{prompt}",
        "{response} {prompt}",
        "Q: {prompt} A: {response}.",
        "{prompt}{prompt}{response}",
    ]:
        with pytest.raises(ValueError, match="must contain"):
            split_template(bad)


def test_gpt2_tokenizer_round_trip(tiktoken_gpt2: None) -> None:
    tok = Tokenizer.gpt2()
    for e in EXAMPLES:
        ids, _ = encode_example(tok, e)
        assert ids[:-1] == tok.encode(format_example(e.prompt, e.response))
        assert ids[-1] == tok.eot_id == 50256


# --------------------------------------------------------------------------------------------
# JSON Lines


def test_read_and_write_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [*EXAMPLES, Example("é ✓", "")])
    path.write_text(path.read_text() + "\n   \n")  # blank lines are skipped
    assert read_jsonl(path) == [*EXAMPLES, Example("é ✓", "")]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"prompt": "a", "response": "b"', "invalid JSON"),
        ('["a", "b"]', "expected a JSON object, got an array"),
        ('"just text"', "expected a JSON object, got a string"),
        ('{"prompt": "a"}', "missing key 'response'"),
        ("{}", "missing key 'prompt' and 'response'"),
        ('{"prompt": "a", "response": "b", "answer": "c"}', "unexpected key 'answer'"),
        ('{"prompt": "a", "response": 5}', "'response' must be a string, got a number"),
        ('{"prompt": null, "response": "b"}', "'prompt' must be a string, got null"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"prompt": "a", "response": "b"}'
    path.write_text(f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(DataError) as e:
        read_jsonl(path)
    assert f"{path}:3: {reason}" in str(e.value)
    assert "1 bad line " in str(e.value)


def test_jsonl_many_errors_empty_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"x\n" * 12 + b'{"prompt": "\xff", "response": ""}\n')
    with pytest.raises(DataError) as e:
        read_jsonl(path)
    message = str(e.value)
    assert "13 bad lines" in message and f"{path}:10: invalid JSON" in message
    assert f"{path}:11:" not in message and "(and 3 more)" in message
    path.write_bytes(b'{"prompt": "\xff", "response": ""}\n')
    with pytest.raises(DataError, match=":1: not UTF-8"):
        read_jsonl(path)
    for content in ["", "\n \n"]:
        path.write_text(content)
        with pytest.raises(DataError, match="holds no examples"):
            read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="--data"):
        read_jsonl(tmp_path / "absent.jsonl")


def test_cli_reports_a_bad_line_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n{"prompt": 1, "response": "b"}\n')
    code = main(["finetune", "--data", str(data), "--out", str(tmp_path / "o"), "--model", "x"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{data}:2: 'prompt' must be a string" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# The instruction data set


def test_instructions_are_deterministic_and_held_out_keys_never_trained() -> None:
    train, held = make_instructions(800, 80, seed=5)
    assert (train, held) == make_instructions(800, 80, seed=5)
    assert make_instructions(800, 80, seed=6)[1] != held
    assert len(train) == 800 and len(held) == 80 and len(set(held)) == 80
    held_prompts = {e.prompt for e in held}
    assert not held_prompts & {e.prompt for e in train}
    # the split is by key: "a plus b" is held out in both orders, a word in every spacing
    for name, task in TASKS.items():
        rng = np.random.default_rng(0)
        for _ in range(200):
            key, example = task(rng)
            assert (example in held) <= is_held_out(name, key, 5, 0.2)
    sums = {
        tuple(sorted(e.prompt.removeprefix("What is ").removesuffix("?").split(" plus ")))
        for e in held
        if e.prompt.startswith("What is")
    }
    for e in train:
        if e.prompt.startswith("What is"):
            pair = e.prompt.removeprefix("What is ").removesuffix("?").split(" plus ")
            assert tuple(sorted(pair)) not in sums
    # the answers follow the rules
    by_prompt = {e.prompt: e.response for e in train + held}
    assert by_prompt.get("Count from 3 to 7.", "3 4 5 6 7") == "3 4 5 6 7"
    for e in held:
        if e.prompt.startswith("Which"):
            a, b = e.prompt.removeprefix("Which is larger, ").removesuffix("?").split(" or ")
            assert e.response == str(max(int(a), int(b)))
        if e.prompt.startswith("Reverse"):
            assert e.response == " ".join(reversed(e.prompt.split(": ")[1].split()))


def test_batch_order_is_epochs_of_permutations() -> None:
    stream = np.concatenate([batch_indices(10, 4, s, seed=0) for s in range(5)])  # 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10].tolist() != stream[10:20].tolist()


# --------------------------------------------------------------------------------------------
# Fine-tuning end to end


def _base_dir(tmp_path: Path, tokenizer: Tokenizer) -> Path:
    """A randomly initialised tiny model saved as a model directory (the "pretrained" base)."""
    config = GPTConfig(vocab_size=tokenizer.n_vocab, n_ctx=32, n_layer=2, n_head=4, n_embd=64)
    base = tmp_path / "base"
    GPT(config, seed=0).save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base


def test_finetune_teaches_a_task_that_generalises(tmp_path: Path) -> None:
    train, held = make_instructions(600, 40, seed=0, tasks=["compare"])
    data = write_jsonl(tmp_path / "train.jsonl", train)
    own = train_bpe("\n".join(format_example(e.prompt, e.response) for e in train), 300)
    base = _base_dir(tmp_path, own)
    model, tok = load(base)
    before = evaluate_sft(model, tok, held, 8)
    cfg = FinetuneConfig(
        data=str(data), out=str(tmp_path / "ft"), model=str(base), steps=400, lr=3e-3, warmup=10
    )
    result = finetune(cfg, progress=False)
    assert result.step == 400 and len(result.losses) == 400
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"] / 3
    tuned, tok = load(tmp_path / "ft")
    after = evaluate_sft(tuned, tok, held, 8)
    assert before.accuracy <= 0.05 and before.stop_rate <= 0.05
    assert after.stop_rate >= 0.9
    assert after.accuracy >= before.accuracy + 0.4  # on pairs of numbers never trained on
    assert load_template(tmp_path / "ft") == TEMPLATE


def test_ctrl_c_then_resume_is_exact_and_freeze_keeps_embeddings(
    tmp_path: Path, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, _ = make_instructions(60, 0, seed=0)
    data = write_jsonl(tmp_path / "train.jsonl", train)
    base = _base_dir(tmp_path, tokenizer)
    common = {"data": str(data), "model": str(base), "batch_size": 4, "freeze_embeddings": True}
    whole = finetune(FinetuneConfig(out=str(tmp_path / "a"), steps=6, **common), progress=False)

    calls = [0]
    original = GPT.loss_and_grads

    def ctrl_c_on_third_step(self: GPT, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "loss_and_grads", ctrl_c_on_third_step)
    cut = finetune(FinetuneConfig(out=str(tmp_path / "b"), steps=6, **common), progress=False)
    monkeypatch.undo()
    assert cut.interrupted and cut.step == 3
    resumed = finetune(resume_config(tmp_path / "b"), resume=True, progress=False)
    assert resumed.step == 6 and resumed.losses == whole.losses  # bit for bit
    a, b, start = (GPT.from_pretrained(tmp_path / d) for d in ("a", "b", "base"))
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    for name in ("wte.weight", "wpe.weight"):
        np.testing.assert_array_equal(a.params[name], start.params[name])
    assert not np.array_equal(a.params["h.0.mlp.c_fc.weight"], start.params["h.0.mlp.c_fc.weight"])
    with pytest.raises(Exception, match="already holds a fine-tuning run"):
        finetune(FinetuneConfig(out=str(tmp_path / "a"), steps=6, **common), progress=False)


def test_cli_finetune_then_generate_in_the_template(
    tmp_path: Path, tokenizer: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    train, _ = make_instructions(40, 0, seed=0)
    data = write_jsonl(tmp_path / "train.jsonl", train)
    base = _base_dir(tmp_path, tokenizer)
    out = tmp_path / "ft"
    argv = ["finetune", "--model", str(base), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--steps", "2", "--batch-size", "4"]) == 0
    assert "fine-tuned 2 steps" in capsys.readouterr().out
    assert json.loads((out / TEMPLATE_FILE).read_text()) == {"template": TEMPLATE}
    assert main(["finetune", "--out", str(out), "--resume", "--steps", "3"]) == 0
    assert "fine-tuned 3 steps" in capsys.readouterr().out
    question = "Count from 3 to 7."
    assert main(["generate", "--model", str(out), question, "-n", "3", "-t", "0"]) == 0
    assert capsys.readouterr().out.startswith(format_prompt(question))
    score_file = write_jsonl(tmp_path / "held.jsonl", EXAMPLES)
    assert main(["eval-sft", "--model", str(out), "--data", str(score_file), "--show", "1"]) == 0
    assert "exact match" in capsys.readouterr().out


def test_finetune_a_hugging_face_directory_stays_readable_by_transformers(
    tmp_path: Path,
) -> None:
    """A GPT-2 directory written by transformers (the tiny-gpt2 fixture, with its own
    tokenizer) fine-tunes, and transformers reads the result and computes the same logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    source = Path(__file__).parent / "fixtures" / "tiny-gpt2"
    train, _ = make_instructions(40, 0, seed=0)
    data = write_jsonl(tmp_path / "train.jsonl", train)
    cfg = FinetuneConfig(data=str(data), out=str(tmp_path / "ft"), model=str(source), steps=3)
    finetune(cfg, progress=False)
    ours, tok = load(tmp_path / "ft")
    assert not np.array_equal(
        ours.params["h.0.mlp.c_fc.weight"], load(source)[0].params["h.0.mlp.c_fc.weight"]
    )
    ids = encode_example(tok, EXAMPLES[0])[0]
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ft").eval()
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(ours(np.array(ids)), expected, atol=1e-4)
