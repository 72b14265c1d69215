"""AdamW, gradient clipping and the learning-rate schedule, checked from their definitions
(their agreement with PyTorch is in ``test_torch_train_parity.py``)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from numpylm import GPT, AdamW, GPTConfig
from numpylm.training.optim import clip_grad_norm, cosine_lr

CONFIG = GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=2, n_embd=8)


def random_grads(params: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in params.items()}


def test_decay_only_on_matrices_and_embeddings() -> None:
    model = GPT(CONFIG)
    opt = AdamW(model.params, lr=0.1, weight_decay=0.5)
    assert "wte.weight" in opt.decay and "wpe.weight" in opt.decay
    assert "h.0.mlp.c_fc.weight" in opt.decay
    assert not any(n.endswith(".bias") or ".ln_" in n or n.startswith("ln_f") for n in opt.decay)
    # with zero gradients Adam's step is 0, leaving only the decoupled decay p *= 1 - lr * wd
    before = {k: p.copy() for k, p in model.params.items()}
    opt.step({k: np.zeros_like(p) for k, p in model.params.items()})
    for name, p in model.params.items():
        factor = 1 - 0.1 * 0.5 if name in opt.decay else 1.0
        np.testing.assert_allclose(p, before[name] * factor, rtol=1e-6)


def test_first_step_moves_every_weight_by_lr() -> None:
    """After bias correction, m_hat = g and v_hat = g^2 at step 1: each weight moves by
    lr * sign(g) (eps aside), whatever the gradient's scale."""
    params = {"b": np.array([1.0, 2.0, 3.0])}
    AdamW(params, lr=0.01, weight_decay=0.0).step({"b": np.array([1e-3, -50.0, 2.0])})
    np.testing.assert_allclose(params["b"], [0.99, 2.01, 2.99], rtol=1e-6)


def test_updates_in_place_and_keeps_dtype_and_layout() -> None:
    model = GPT(CONFIG)  # float32; wte is stored column-major
    arrays = {k: id(p) for k, p in model.params.items()}
    opt = AdamW(model.params, lr=1e-3)
    opt.step(random_grads(model.params, 0), lr=2e-3)
    assert opt.lr == 2e-3
    for k, p in model.params.items():
        assert id(p) == arrays[k] and p.dtype == np.float32
        assert opt.m[k].dtype == np.float32 and opt.v[k].dtype == np.float32
    assert model.params["wte.weight"].flags.f_contiguous


def test_state_dict_round_trip_continues_exactly() -> None:
    """Save after 3 steps (as .npz, without pickle), restore into a fresh optimiser over a copy
    of the weights, and the next 3 steps are bit-for-bit those of the uninterrupted run."""
    model = GPT(CONFIG)
    opt = AdamW(model.params, lr=1e-2)
    for s in range(3):
        opt.step(random_grads(model.params, s))
    buffer = io.BytesIO()
    np.savez(buffer, **opt.state_dict())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        state = dict(saved)
    assert int(state["step"]) == 3

    copy = {k: p.copy() for k, p in model.params.items()}
    resumed = AdamW(copy, lr=1e-2)
    resumed.load_state_dict(state)
    for s in range(3, 6):
        opt.step(random_grads(model.params, s))
        resumed.step(random_grads(copy, s))
    for k in model.params:
        assert np.array_equal(model.params[k], copy[k]), k


def test_clear_errors() -> None:
    params = {"w": np.ones((2, 2))}
    with pytest.raises(ValueError, match="lr"):
        AdamW(params, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        AdamW(params, lr=0.1, betas=(0.9, 1.0))
    opt = AdamW(params, lr=0.1)
    with pytest.raises(ValueError, match="missing"):
        opt.step({})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"w": np.ones(3)})
    with pytest.raises(ValueError, match="does not match"):
        opt.load_state_dict({"step": np.array(1)})
    with pytest.raises(TypeError, match="float32 or float64"):
        AdamW({"w": np.ones(2, dtype=int)}, lr=0.1)


def test_clip_grad_norm() -> None:
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, max_norm=10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(grads["a"], [3.0, 0.0])  # below the limit: untouched
    assert clip_grad_norm(grads, max_norm=1.0) == pytest.approx(5.0)  # the norm before
    total = math.sqrt(sum(float((g**2).sum()) for g in grads.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(grads["a"] / grads["b"][0, 0], [0.75, 0.0])  # direction kept
    # a column-major array (like wte's gradient) counts all its entries
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    assert clip_grad_norm({"f": f}, 100.0) == pytest.approx(np.linalg.norm(f))
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)


def test_cosine_lr() -> None:
    def lr(step: int) -> float:
        return cosine_lr(step, max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)

    assert lr(0) == pytest.approx(0.1)  # warm-up starts at max_lr / warmup_steps
    assert lr(4) == pytest.approx(0.5)
    assert lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)  # the cosine starts at the top
    assert lr(60) == pytest.approx(0.55)  # half-way down: the mean of max and min
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    values = [lr(s) for s in range(10, 111)]
    assert np.all(np.diff(values) <= 0)  # never rises after the warm-up
    assert cosine_lr(0, max_lr=1.0, warmup_steps=0, total_steps=5, min_lr=0.0) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_lr(0, max_lr=1.0, warmup_steps=10, total_steps=5, min_lr=0.0)
    with pytest.raises(ValueError, match="min_lr"):
        cosine_lr(0, max_lr=1.0, warmup_steps=1, total_steps=5, min_lr=2.0)
    with pytest.raises(ValueError, match="step"):
        cosine_lr(-1, max_lr=1.0, warmup_steps=1, total_steps=5, min_lr=0.0)
