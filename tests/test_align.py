"""Preference tuning (DPO): the hand-written gradient against finite differences and torch
autograd, the weighted cross-entropy it rests on, the pairs reader, and short runs with their
checkpoints, resume and reference check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_err

from numpylm import GPT, GPTConfig
from numpylm.align import (
    preference_loss_and_grads,
    sequence_logprobs,
)
from numpylm.layers import cross_entropy

TOL = 1e-6  # finite differences in float64

MICRO = GPTConfig(vocab_size=7, n_ctx=8, n_layer=2, n_head=2, n_embd=8)


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
    model: GPT, x: np.ndarray, y: np.ndarray, ref: np.ndarray, beta: float
) -> float:
    """DPO's loss from its definition, through ``model(x)`` alone (none of align's code)."""
    logits = model(x)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    seq = np.array(
        [sum(logp[b, t, y[b, t]] for t in range(y.shape[1]) if y[b, t] >= 0) for b in range(len(y))]
    )
    B = len(y) // 2
    z = beta * ((seq[:B] - ref[:B]) - (seq[B:] - ref[B:]))
    return float(np.mean(-np.log(1 / (1 + np.exp(-z)))))


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


@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_dpo_gradient_matches_finite_differences(beta: float) -> None:
    """Every entry of every parameter, float64, against central differences of the loss from
    its definition; the reference is another random model, so the margins are not 0."""
    model = random_model(MICRO, seed=0)
    x, y = micro_batch()
    ref = sequence_logprobs(random_model(MICRO, seed=1)(x), y)
    loss, grads, margins = preference_loss_and_grads(model.params, MICRO.n_head, x, y, ref, beta)
    assert loss == pytest.approx(independent_dpo_loss(model, x, y, ref, beta), rel=1e-12)
    assert margins.shape == (2,) and np.all(np.abs(margins) > 1e-3)
    assert list(grads) == list(model.params)
    for name, p in model.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == np.float64
        g = numerical_grad(lambda: independent_dpo_loss(model, x, y, ref, beta), p)
        assert rel_err(g, grads[name]) < TOL, name


def test_dpo_starts_at_log_2_and_pushes_the_answers_apart() -> None:
    """Policy = reference: every margin is 0 and the loss log 2; one small step against the
    gradient raises the chosen answers' log-probabilities and lowers the rejected ones'."""
    model = random_model(MICRO, seed=2)
    x, y = micro_batch()
    before = sequence_logprobs(model(x), y)
    loss, grads, margins = preference_loss_and_grads(model.params, MICRO.n_head, x, y, before, 0.5)
    assert loss == pytest.approx(np.log(2), abs=1e-12) and np.allclose(margins, 0, atol=1e-12)
    for name, p in model.params.items():
        p -= 1e-3 * grads[name]
    after = sequence_logprobs(model(x), y)
    assert np.all(after[:2] > before[:2]) and np.all(after[2:] < before[2:])


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
    loss, grads, _ = preference_loss_and_grads(model.params, config.n_head, x, y, ref, beta)

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
