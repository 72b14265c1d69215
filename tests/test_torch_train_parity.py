"""Training in numpylm computes what training in PyTorch computes, for the same weights.

The reference is Hugging Face ``transformers``' ``GPT2LMHeadModel``, loaded from a checkpoint
numpylm wrote, with torch autograd for the gradients and ``torch.optim.AdamW`` for the updates:
none of numpylm's code is on that side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from numpylm import GPT, AdamW, GPTConfig
from numpylm.training.optim import clip_grad_norm, cosine_lr

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIG = GPTConfig(vocab_size=67, n_ctx=16, n_layer=2, n_head=4, n_embd=32)
TOL = {np.float64: 1e-8, np.float32: 1e-4}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def random_model(dtype: type, seed: int = 0) -> GPT:
    """Every parameter random (biases not 0, gains not 1), so every gradient is exercised."""
    model = GPT(CONFIG, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for p in model.params.values():
        p += rng.standard_normal(p.shape) * 0.1
    return GPT(CONFIG, params={k: v.astype(dtype) for k, v in model.params.items()}, dtype=dtype)


def torch_twin(model: GPT, tmp_path: Path) -> Any:
    """The same weights in ``transformers``, via ``save_pretrained`` and ``from_pretrained``."""
    model.save_pretrained(tmp_path)
    twin = transformers.GPT2LMHeadModel.from_pretrained(
        tmp_path, torch_dtype=TORCH_DTYPE[model.dtype.type], attn_implementation="eager"
    )
    twin.train()  # dropout is 0 in the config numpylm writes, so train mode is deterministic
    return twin


def torch_loss(twin: Any, ids: np.ndarray, targets: np.ndarray, mask: np.ndarray | None) -> Any:
    logits = twin(torch.from_numpy(ids)).logits
    t = targets if mask is None else np.where(mask, targets, -1)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), torch.from_numpy(t).reshape(-1), ignore_index=-1
    )


def torch_grads(twin: Any) -> dict[str, np.ndarray]:
    """Gradients by numpylm's names; the tied ``lm_head`` is the same tensor as ``wte``."""
    return {
        name.removeprefix("transformer."): p.grad.numpy()
        for name, p in twin.named_parameters()
        if p.grad is not None
    }


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b)))


def batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CONFIG.vocab_size, (3, CONFIG.n_ctx + 1))
    tokens[:, 5] = tokens[:, 2]  # repeated ids, for the embedding's accumulation
    return np.ascontiguousarray(tokens[:, :-1]), np.ascontiguousarray(tokens[:, 1:])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("masked", [False, True])
def test_loss_and_every_gradient_match_torch(dtype: type, masked: bool, tmp_path: Path) -> None:
    model = random_model(dtype)
    twin = torch_twin(model, tmp_path)
    ids, targets = batch(0)
    mask = None
    if masked:
        targets[0, 3] = -1
        mask = np.ones(ids.shape, dtype=bool)
        mask[1, :7] = False

    loss, grads = model.loss_and_grads(ids, targets, mask)
    t_loss = torch_loss(twin, ids, targets, mask)
    t_loss.backward()
    expected = torch_grads(twin)

    tol = TOL[dtype]
    assert abs(loss - t_loss.item()) <= tol * abs(t_loss.item())
    assert sorted(expected) == sorted(grads)  # every parameter, nothing more
    for name, g in grads.items():
        assert g.dtype == dtype
        assert rel_err(g, expected[name]) <= tol, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ten_adamw_steps_match_torch(dtype: type, tmp_path: Path) -> None:
    """Same losses step by step, with decay on the 2-D weights only, clipping and a schedule."""
    model = random_model(dtype, seed=1)
    twin = torch_twin(model, tmp_path)
    opt = AdamW(model.params, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    assert opt.decay == {n for n, p in model.params.items() if p.ndim == 2}
    groups: dict[bool, list[Any]] = {True: [], False: []}
    for name, p in twin.named_parameters():
        groups[name.removeprefix("transformer.") in opt.decay].append(p)
    t_opt = torch.optim.AdamW(
        [
            {"params": groups[True], "weight_decay": 0.1},
            {"params": groups[False], "weight_decay": 0.0},
        ],
        lr=1e-2,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    losses, t_losses, norms, t_norms = [], [], [], []
    for step in range(10):
        lr = cosine_lr(step, max_lr=1e-2, warmup_steps=3, total_steps=10, min_lr=1e-3)
        ids, targets = batch(100 + step % 2)  # two batches, over and over: learnable
        loss, grads = model.loss_and_grads(ids, targets)
        norms.append(clip_grad_norm(grads, max_norm=1.0))
        opt.step(grads, lr=lr)
        losses.append(loss)

        for group in t_opt.param_groups:
            group["lr"] = lr
        t_opt.zero_grad()
        t_loss = torch_loss(twin, ids, targets, None)
        t_loss.backward()
        t_norms.append(torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0).item())
        t_opt.step()
        t_losses.append(t_loss.item())

    assert losses[-1] < losses[0]  # it learned something, so the steps were not trivial
    assert max(norms) > 1.0  # clipping was active in some step
    np.testing.assert_allclose(losses, t_losses, rtol=1e-4)
    np.testing.assert_allclose(norms, t_norms, rtol=1e-4)
    C = CONFIG.n_embd
    for name, p in twin.named_parameters():
        mine, theirs = model.params[name.removeprefix("transformer.")], p.detach().numpy()
        assert mine.dtype == dtype
        if dtype == np.float32 and name.endswith("c_attn.bias"):
            # The key bias adds q . b_k to every score of a row alike, which softmax ignores:
            # its true gradient is 0, so both sides hold float32 rounding noise there, which
            # Adam's normalisation turns into full-size (and different) steps. Skip that third.
            keep = np.r_[0:C, 2 * C : 3 * C]
            mine, theirs = mine[keep], theirs[keep]
        assert rel_err(mine, theirs) <= 1e-4, name
