"""Preference tuning (DPO): the hand-written gradient against finite differences and torch
autograd, the weighted cross-entropy it rests on, the pairs reader, and short runs with their
checkpoints, resume and reference check."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_err

import numpylm.training.align
from numpylm import GPT, GPTConfig, Tokenizer, train_bpe
from numpylm.cli import main
from numpylm.io.checkpoint import CheckpointError
from numpylm.layers import cross_entropy
from numpylm.training.align import (
    AlignConfig,
    Pair,
    align,
    pair_logprobs,
    preference_figures,
    preference_loss_and_grads,
    read_pairs,
    resume_config,
    sequence_logprobs,
    weights_sha256,
    write_pairs,
)
from numpylm.training.finetune import TEMPLATE_FILE, DataError, Example, encode_example, pad_batch

TOL = 1e-6  # finite differences in float64

MICRO = GPTConfig(vocab_size=7, n_ctx=8, n_layer=1, n_head=2, n_embd=8)


def random_model(config: GPTConfig, seed: int, dtype: type = np.float64) -> GPT:
    """Every parameter random (biases not 0, gains not 1), so no gradient is zero by chance."""
    model = GPT(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    for p in model.params.values():
        p += (rng.standard_normal(p.shape) * 0.3).astype(p.dtype)
    return model


def micro_batch() -> tuple[np.ndarray, np.ndarray]:
    """Two pairs as finetune.pad_batch lays them out: chosen rows, then rejected rows; the
    prompt's and the padding's targets are -1, answers of different lengths."""
    x = np.array([[3, 1, 3, 3, 0, 6], [1, 1, 5, 2, 3, 1], [3, 1, 3, 4, 6, 6], [1, 1, 5, 0, 6, 6]])
    y = np.array(
        [
            [-1, -1, 3, 0, 6, -1],  # chosen of pair 0: prompt 3 1 3, answer 3 0 <eot=6>
            [-1, -1, 2, 3, 1, 6],  # chosen of pair 1
            [-1, -1, 4, 6, -1, -1],  # rejected of pair 0
            [-1, -1, 0, 6, -1, -1],  # rejected of pair 1
        ]
    )
    return x, y


def independent_dpo_loss(
    model: GPT, x: np.ndarray, y: np.ndarray, ref: np.ndarray, beta: float, nll: float = 0.0
) -> float:
    """DPO's loss from its definition, through ``model(x)`` alone (none of align's code)."""
    logits = model(x)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    seq = np.array(
        [sum(logp[b, t, y[b, t]] for t in range(y.shape[1]) if y[b, t] >= 0) for b in range(len(y))]
    )
    B = len(y) // 2
    z = beta * ((seq[:B] - ref[:B]) - (seq[B:] - ref[B:]))
    chosen_tokens = (y[:B] >= 0).sum()
    return float(np.mean(-np.log(1 / (1 + np.exp(-z)))) - nll * seq[:B].sum() / chosen_tokens)


def test_weighted_cross_entropy_value_and_gradient() -> None:
    """``weights=`` replaces the mean's 1/n, negative weights included."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 4, 5)) * 2
    targets = rng.integers(0, 5, (2, 4))
    targets[1, 0] = -1
    weights = rng.standard_normal((2, 4))
    p = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    counted = targets != -1
    expected = float((-np.log(p[counted, targets[counted]]) * weights[counted]).sum())
    loss, dlogits = cross_entropy(logits, targets, weights=weights)
    assert loss == pytest.approx(expected, rel=1e-12)
    g = numerical_grad(lambda: cross_entropy(logits, targets, weights=weights)[0], logits)
    assert rel_err(g, dlogits) < TOL
    assert np.all(dlogits[1, 0] == 0)
    # weights of 1/n give the mean back, bit for bit in the loss
    n = counted.sum()
    mean = cross_entropy(logits, targets)
    same = cross_entropy(logits, targets, weights=np.full((2, 4), 1 / n))
    assert same[0] == pytest.approx(mean[0], rel=1e-14)
    np.testing.assert_allclose(same[1], mean[1], rtol=1e-13)


@pytest.mark.parametrize("nll", [0.0, 0.6])
def test_dpo_gradient_matches_finite_differences(nll: float) -> None:
    """Every entry of every parameter, float64, against central differences of the loss from
    its definition; the reference is another random model, so the margins are not 0 and the
    pairs' weights differ. ``nll`` > 0 adds the chosen answers' cross-entropy (RPO)."""
    beta = 0.7
    model = random_model(MICRO, seed=0)
    x, y = micro_batch()
    ref = sequence_logprobs(random_model(MICRO, seed=1)(x), y)
    loss, grads, margins = preference_loss_and_grads(model, x, y, ref, beta, nll=nll)
    assert loss == pytest.approx(independent_dpo_loss(model, x, y, ref, beta, nll), rel=1e-12)
    assert margins.shape == (2,) and np.all(np.abs(margins) > 1e-3)
    assert list(grads) == list(model.params)
    for name, p in model.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == np.float64
        g = numerical_grad(lambda: independent_dpo_loss(model, x, y, ref, beta, nll), p)
        assert rel_err(g, grads[name]) < TOL, name


def test_dpo_starts_at_log_2_and_pushes_the_answers_apart() -> None:
    """Policy = reference: every margin is 0 and the loss log 2; one small step against the
    gradient raises the chosen answers' log-probabilities and lowers the rejected ones'."""
    model = random_model(MICRO, seed=2)
    x, y = micro_batch()
    before = sequence_logprobs(model(x), y)
    loss, grads, margins = preference_loss_and_grads(model, x, y, before, 0.5)
    assert loss == pytest.approx(np.log(2), abs=1e-12) and np.allclose(margins, 0, atol=1e-12)
    for name, p in model.params.items():
        p -= 1e-3 * grads[name]
    after = sequence_logprobs(model(x), y)
    assert np.all(after[:2] > before[:2]) and np.all(after[2:] < before[2:])


# --------------------------------------------------------------------------------------------
# The pairs file

PAIRS = [
    Pair("Count from 3 to 7.", "3 4 5 6 7", "I don't know."),
    Pair("Which is larger, 41 or 17?", "41", "17"),
    Pair("What is 2 plus 2?", "4", "5"),
]


def test_pairs_round_trip_and_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "p.jsonl", PAIRS)
    assert read_pairs(path) == PAIRS
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "a", "chosen": "b", "rejected": "c"}\n\n'
        '{"prompt": "a", "chosen": "b"}\n'
        '{"prompt": "a", "chosen": "b", "rejected": "b"}\n'
        '{"prompt": "a", "chosen": "b", "rejected": 3}\n'
        '{"prompt": "a", "response": "b", "chosen": "b", "rejected": "c"}\n'
    )
    with pytest.raises(DataError) as e:
        read_pairs(bad)
    message = str(e.value)
    assert message.startswith(f"4 bad lines in {bad}; each line must be a JSON object ")
    assert f"{bad}:3: missing key 'rejected'" in message
    assert f"{bad}:4: 'chosen' and 'rejected' are the same answer" in message
    assert f"{bad}:5: 'rejected' must be a string, got a number" in message
    assert f"{bad}:6: unexpected key 'response' (only 'prompt', 'chosen' and 'rejected'" in message


def test_cli_reports_a_bad_pair_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"}\n')
    code = main(["align", "--data", str(data), "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{data}:2: missing key 'chosen' and 'rejected'" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# Runs


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model with a BPE vocabulary of the pairs' text, saved as a model
    directory with its prompt template."""
    text = "\n".join(f"Question: {p.prompt}\nAnswer: {p.chosen} {p.rejected}" for p in PAIRS)
    tokenizer = train_bpe(text * 20, 280)
    config = GPTConfig(vocab_size=tokenizer.n_vocab, n_ctx=32, n_layer=1, n_head=2, n_embd=16)
    path = tmp_path_factory.mktemp("base")
    GPT(config, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / TEMPLATE_FILE).write_text(json.dumps({"template": "Q: {prompt}\nA: {response}"}))
    return path


def many_pairs(n: int) -> list[Pair]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        a, b = (int(v) for v in rng.integers(0, 50, 2))
        out.append(Pair(f"What is {a} plus {b}?", str(a + b), str(a + b + 1)))
    return out


def test_align_moves_towards_the_chosen_and_ctrl_c_then_resume_is_exact(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", many_pairs(40))
    common: dict[str, Any] = dict(
        data=str(data), model=str(base), steps=6, batch_size=8, lr=3e-3, eval_every=3
    )
    whole = align(AlignConfig(out=str(tmp_path / "a"), **common), progress=False)
    assert whole.step == 6 and whole.losses[0] == pytest.approx(np.log(2), abs=1e-5)
    first, last = whole.history[0], whole.history[-1]
    assert first["val_margin"] == pytest.approx(0, abs=1e-5) and first["val_accuracy"] == 0
    assert last["val_margin"] > 0 and last["val_accuracy"] >= 0.75
    assert last["val_margin"] == pytest.approx(last["val_chosen"] - last["val_rejected"])
    # the run records the template the model came with, and the reference's weights
    state = json.loads((tmp_path / "a" / "trainer_state.json").read_text())
    assert state["kind"] == "align" and state["args"]["template"] == "Q: {prompt}\nA: {response}"
    assert state["reference_sha256"] == weights_sha256(GPT.from_pretrained(base))

    calls = [0]
    original = numpylm.training.align.preference_loss_and_grads

    def ctrl_c_on_third_step(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C
        return original(*args, **kwargs)

    monkeypatch.setattr(numpylm.training.align, "preference_loss_and_grads", ctrl_c_on_third_step)
    cut = align(AlignConfig(out=str(tmp_path / "b"), **common), progress=False)
    monkeypatch.undo()
    assert cut.interrupted and cut.step == 3
    resumed = align(resume_config(tmp_path / "b"), resume=True, progress=False)
    assert resumed.step == 6 and resumed.losses == whole.losses  # bit for bit
    a, b = GPT.from_pretrained(tmp_path / "a"), GPT.from_pretrained(tmp_path / "b")
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_resume_refuses_another_reference(base: Path, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", many_pairs(20))
    cfg = AlignConfig(data=str(data), out=str(tmp_path / "r"), model=str(base), steps=2)
    align(cfg, progress=False)
    other = tmp_path / "other"
    model = GPT.from_pretrained(base)
    model.params["h.0.ln_1.bias"] += 1e-3  # one weight moved: another model
    model.save_pretrained(other)
    Tokenizer.from_pretrained(base).save_pretrained(other)
    with pytest.raises(CheckpointError, match="is not the one this run started from"):
        align(resume_config(tmp_path / "r", steps=3, model=str(other)), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="already holds a preference-tuning run"):
        align(cfg, progress=False)


def test_cli_align_then_resume(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", many_pairs(20))
    out = tmp_path / "al"
    argv = ["align", "--model", str(base), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--steps", "2", "--beta", "0.5", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "\naligned 2 steps; on the held-out pairs: loss " in printed
    assert json.loads((out / "trainer_state.json").read_text())["args"]["beta"] == 0.5
    assert main(["align", "--out", str(out), "--resume", "--steps", "3"]) == 0
    assert "aligned 3 steps" in capsys.readouterr().out
    assert main(["finetune", "--out", str(out), "--resume"]) == 1
    assert "resume it with numpylm align" in capsys.readouterr().err


def test_reference_logprobs_are_the_answers_and_figures_add_up() -> None:
    """``pair_logprobs`` scores exactly the answer tokens that fine-tuning scores, and the
    figures follow from the rewards."""
    text = "\n".join(f"Question: {p.prompt}\nAnswer: {p.chosen} {p.rejected}" for p in PAIRS)
    tokenizer = train_bpe(text * 5, 270)
    model = random_model(
        GPTConfig(vocab_size=tokenizer.n_vocab, n_ctx=64, n_layer=1, n_head=2, n_embd=8), 5
    )
    rows = [
        tuple(encode_example(tokenizer, Example(p.prompt, a)) for a in (p.chosen, p.rejected))
        for p in PAIRS
    ]
    got = pair_logprobs(model, rows, 2, tokenizer.eot_id)  # batches of 2 answers: padding
    for i, pair in enumerate(rows):
        for j, (ids, n_prompt) in enumerate(pair):
            x, y = pad_batch([(ids, n_prompt)], tokenizer.eot_id)
            expected = -model.loss(x, y) * (len(ids) - n_prompt)  # mean -> sum
            assert got[i, j] == pytest.approx(expected, rel=1e-9)
    figures = preference_figures(got + np.array([1.0, -1.0]), got, beta=0.5)
    assert figures["val_margin"] == pytest.approx(1.0) and figures["val_accuracy"] == 1.0
    assert figures["val_loss"] == pytest.approx(np.log1p(np.exp(-1.0)))


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dpo_loss_and_gradient_match_torch_autograd(dtype: type, tmp_path: Path) -> None:
    """The same loss written in torch on transformers' GPT-2 with the same weights, its
    gradient by autograd: none of numpylm's code on that side."""
    config = GPTConfig(vocab_size=67, n_ctx=16, n_layer=2, n_head=4, n_embd=32)
    model = random_model(config, seed=3, dtype=dtype)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 67, (6, 12))
    y = np.where(np.arange(12) >= 4, rng.integers(0, 67, (6, 12)), -1)  # 4 prompt positions
    y[3, 9:] = -1  # a shorter answer: padding
    ref = sequence_logprobs(random_model(config, seed=4, dtype=dtype)(x), y)
    beta = 0.3
    loss, grads, _ = preference_loss_and_grads(model, x, y, ref, beta)

    torch_dtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    model.save_pretrained(tmp_path)
    twin = transformers.GPT2LMHeadModel.from_pretrained(
        tmp_path, torch_dtype=torch_dtype, attn_implementation="eager"
    )
    logp = torch.log_softmax(twin(torch.from_numpy(x)).logits, dim=-1)
    t = torch.from_numpy(y)
    picked = logp.gather(-1, t.clamp(min=0)[..., None])[..., 0] * (t >= 0)
    rewards = beta * (picked.sum(-1) - torch.from_numpy(ref))
    z = rewards[:3] - rewards[3:]
    t_loss = -torch.nn.functional.logsigmoid(z).mean()
    t_loss.backward()
    expected = {n.removeprefix("transformer."): p.grad.numpy() for n, p in twin.named_parameters()}

    tol = {np.float64: 1e-8, np.float32: 2e-4}[dtype]
    assert abs(loss - t_loss.item()) <= tol * abs(t_loss.item())
    assert sorted(expected) == sorted(grads)
    for name, g in grads.items():
        assert g.dtype == dtype
        scale = max(np.linalg.norm(g), np.linalg.norm(expected[name]))
        assert np.linalg.norm(g.astype(np.float64) - expected[name]) <= tol * scale, name
