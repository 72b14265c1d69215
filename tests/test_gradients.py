"""Every hand-written backward pass against central finite differences, in float64.

For a function ``f`` of an array ``a``, ``(f(a + h e_i) - f(a - h e_i)) / 2h`` estimates
``df/da_i`` with an error of order ``h^2`` that has nothing to do with the backward code. Each
layer is turned into a scalar ``sum(out * R)`` with a fixed random ``R``, so its backward is
called with ``dout = R``. The comparison is the relative error of the whole gradient,
``|fd - g| / max(|fd|, |g|)``, which must be at most 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_err

from numpylm import GPT, GPTConfig
from numpylm.layers import (
    attention,
    attention_backward,
    causal_mask,
    cross_entropy,
    embedding,
    embedding_backward,
    gelu,
    gelu_backward,
    layer_norm,
    layer_norm_backward,
    linear,
    linear_backward,
    softmax_backward,
)
from numpylm.sampling import softmax

TOL = 1e-6


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def test_embedding_backward_repeated_ids(rng: np.random.Generator) -> None:
    V, n_ctx, C = 5, 7, 3
    wte, wpe = rng.standard_normal((V, C)), rng.standard_normal((n_ctx, C))
    ids = np.array([[1, 3, 1, 1, 0], [3, 3, 2, 1, 4]])  # token 1 four times, token 3 three
    for pos in (np.arange(5), np.array([[0, 1, 2, 3, 4], [0, 0, 1, 2, 2]])):  # shared, per row
        R = rng.standard_normal((2, 5, C))

        def f(pos: np.ndarray = pos, R: np.ndarray = R) -> float:
            return float((embedding(wte, wpe, ids, pos) * R).sum())

        dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
        embedding_backward(R, ids, pos, dwte, dwpe)
        assert rel_err(numerical_grad(f, wte), dwte) < TOL
        assert rel_err(numerical_grad(f, wpe), dwpe) < TOL
        # the row of a repeated token is the sum over its occurrences, not the last one
        np.testing.assert_allclose(dwte[1], R[ids == 1].sum(axis=0))


def test_embedding_backward_adds_to_what_is_there(rng: np.random.Generator) -> None:
    """The tied LM head's share is already in dwte when the embedding adds its own."""
    dout, ids = rng.standard_normal((1, 3, 2)), np.array([[0, 2, 0]])
    dwte, dwpe = np.ones((4, 2)), np.ones((3, 2))
    embedding_backward(dout, ids, np.arange(3), dwte, dwpe)
    np.testing.assert_allclose(dwte[0], 1 + dout[0, 0] + dout[0, 2])
    np.testing.assert_allclose(dwte[3], 1.0)
    np.testing.assert_allclose(dwpe, 1 + dout[0])
    # a column-major table (like the model's wte) gets the same sums
    dwte_f = np.asfortranarray(np.ones((4, 2)))
    embedding_backward(dout, ids, np.arange(3), dwte_f, np.ones((3, 2)))
    np.testing.assert_allclose(dwte_f, dwte)
    # and so does a strided view (the fast path that needed contiguous tables is gone)
    strided = np.ones((4, 4))[:, :2]
    embedding_backward(dout, ids, np.arange(3), strided, np.ones((3, 2)))
    np.testing.assert_allclose(strided, dwte)


def test_layer_norm_backward(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 6)) * 3 + 1
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    R = rng.standard_normal((2, 3, 6))

    def f() -> float:
        return float((layer_norm(x, w, b) * R).sum())

    dx, dw, db = layer_norm_backward(R, x, w)
    for a, g in ((x, dx), (w, dw), (b, db)):
        assert rel_err(numerical_grad(f, a), g) < TOL


def test_linear_backward(rng: np.random.Generator) -> None:
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    R = rng.standard_normal((2, 3, 5))

    def f() -> float:
        return float((linear(x, w, b) * R).sum())

    dx, dw, db = linear_backward(R, x, w)
    for a, g in ((x, dx), (w, dw), (b, db)):
        assert rel_err(numerical_grad(f, a), g) < TOL


def test_gelu_backward(rng: np.random.Generator) -> None:
    x = np.concatenate([rng.standard_normal(40) * 3, [0.0, -6.0, 6.0, 1e-9, -1e-9]])
    R = rng.standard_normal(x.shape)

    def f() -> float:
        return float((gelu(x) * R).sum())

    assert rel_err(numerical_grad(f, x), gelu_backward(R, x, gelu(x))) < TOL


def test_softmax_backward(rng: np.random.Generator) -> None:
    x, R = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))

    def f() -> float:
        return float((softmax(x) * R).sum())

    assert rel_err(numerical_grad(f, x), softmax_backward(R, softmax(x))) < TOL


@pytest.mark.parametrize("case", ["causal", "causal+cache+padding", "no mask"])
def test_attention_backward(rng: np.random.Generator, case: str) -> None:
    B, Hh, T, D = 2, 3, 4, 5
    L = T + 2 if "cache" in case else T  # keys of earlier (cached) tokens come first
    q = rng.standard_normal((B, Hh, T, D))
    k, v = rng.standard_normal((B, Hh, L, D)), rng.standard_normal((B, Hh, L, D))
    allowed: np.ndarray | None = None
    if case != "no mask":
        allowed = causal_mask(T, L)
        if "padding" in case:
            keys = np.ones((B, L), dtype=bool)
            keys[1, :2] = False  # row 1 is left-padded: nobody may look at its first two keys
            allowed = allowed & keys[:, None, None, :]
    R = rng.standard_normal((B, Hh, T, D))

    def f() -> float:
        return float((attention(q, k, v, allowed)[0] * R).sum())

    _, att = attention(q, k, v, allowed)
    dq, dk, dv = attention_backward(R, q, k, v, att)
    for a, g in ((q, dq), (k, dk), (v, dv)):
        assert rel_err(numerical_grad(f, a), g) < TOL
    if "padding" in case:
        assert np.all(dk[1, :, :2] == 0) and np.all(dv[1, :, :2] == 0)  # hidden keys learn nothing


def test_cross_entropy_value_and_backward(rng: np.random.Generator) -> None:
    B, T, V = 2, 5, 7
    logits = rng.standard_normal((B, T, V)) * 2
    targets = rng.integers(0, V, (B, T))
    targets[0, 1] = -1  # ignored
    mask = np.ones((B, T), dtype=bool)
    mask[1, 3:] = False  # not scored
    counted = (targets != -1) & mask

    # the value, from its definition: -log of the target's softmax probability, averaged
    p = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    expected = -np.log(p[counted, targets[counted]]).mean()
    loss, dlogits = cross_entropy(logits, targets, mask)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert isinstance(loss, float)

    def f() -> float:
        return cross_entropy(logits, targets, mask)[0]

    assert rel_err(numerical_grad(f, logits), dlogits) < TOL
    assert np.all(dlogits[~counted] == 0)


def test_cross_entropy_stable_and_uniform() -> None:
    V = 10
    loss, _ = cross_entropy(np.zeros((3, V)), np.array([0, 4, 9]))
    assert loss == pytest.approx(np.log(V), rel=1e-12)  # the uniform guess costs ln V
    loss, d = cross_entropy(np.array([[1000.0, 1001.0]], dtype=np.float32), np.array([1]))
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert loss == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-6)
    with pytest.raises(ValueError, match="no position counts"):
        cross_entropy(np.zeros((2, V)), np.array([-1, -1]))


# ----------------------------------------------------------------------------------------------
# The whole model

MICRO = GPTConfig(vocab_size=7, n_ctx=8, n_layer=2, n_head=2, n_embd=8)


def random_model(config: GPTConfig, seed: int, dtype: type = np.float64) -> GPT:
    """A model whose every parameter is random (biases not 0, gains not 1), so no gradient is
    zero by accident of the initialisation."""
    model = GPT(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():
        p += (rng.standard_normal(p.shape) * 0.3).astype(p.dtype)
        assert p.dtype == dtype, name
    return model


def test_model_loss_and_grads_finite_differences() -> None:
    """Every entry of every parameter, with repeated token ids (so the tied wte gets gradient
    from both its uses and from several occurrences), an ignored target and a loss mask."""
    model = random_model(MICRO, seed=0)
    rng = np.random.default_rng(0)
    ids = np.array([[3, 1, 3, 3, 0, 6], [1, 1, 5, 2, 3, 1]])
    targets = rng.integers(0, MICRO.vocab_size, ids.shape)
    targets[0, 4] = -1
    mask = np.ones(ids.shape, dtype=bool)
    mask[1, :2] = False
    loss, grads = model.loss_and_grads(ids, targets, mask)
    assert list(grads) == list(model.params)
    # The same loss to rounding (training's GELU is gelu_fast, the plain backend's the formula)
    assert loss == pytest.approx(model.loss(ids, targets, mask), rel=1e-12)

    def f() -> float:
        return model.loss(ids, targets, mask)

    for name, p in model.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype
        assert rel_err(numerical_grad(f, p), grads[name]) < TOL, name


def test_model_loss_is_mean_cross_entropy_of_logits() -> None:
    """The loss is computed from the same logits ``model(ids)`` returns."""
    model = random_model(MICRO, seed=1)
    ids = np.array([[0, 1, 2, 3], [4, 5, 6, 0]])
    targets = np.array([[1, 2, -1, 4], [5, 6, 0, 1]])
    mask = np.array([[1, 1, 1, 1], [0, 1, 1, 1]], dtype=bool)
    logits = model(ids)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    counted = mask & (targets != -1)
    expected = -logp[counted, targets[counted]].mean()
    assert model.loss_and_grads(ids, targets, mask)[0] == pytest.approx(expected, rel=1e-12)
    # a mask and a target of -1 mean the same thing
    masked_targets = np.where(mask, targets, -1)
    assert model.loss(ids, masked_targets) == pytest.approx(expected, rel=1e-12)


def test_float32_grads_stay_float32_and_agree_with_float64() -> None:
    m64 = random_model(MICRO, seed=2)
    m32 = GPT(MICRO, params={k: v.astype(np.float32) for k, v in m64.params.items()})
    ids = np.array([[1, 2, 3, 1, 2, 3, 1, 2]])
    targets = np.roll(ids, -1)
    loss64, g64 = m64.loss_and_grads(ids, targets)
    loss32, g32 = m32.loss_and_grads(ids, targets)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for name in g64:
        assert g32[name].dtype == np.float32, name
        assert rel_err(g64[name], g32[name].astype(np.float64)) < 1e-4, name


def test_one_dimensional_ids_are_one_sequence() -> None:
    model = random_model(MICRO, seed=3)
    ids, targets = np.array([1, 2, 3, 4]), np.array([2, 3, 4, 5])
    loss1, g1 = model.loss_and_grads(ids, targets)
    loss2, g2 = model.loss_and_grads(ids[None], targets[None])
    assert loss1 == loss2
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


@pytest.mark.parametrize(
    ("ids", "targets", "mask", "error", "match"),
    [
        (np.zeros((1, 9), int), np.zeros((1, 9), int), None, ValueError, "n_ctx=8"),
        (np.zeros((1, 3), int), np.zeros((1, 4), int), None, ValueError, "shape of ids"),
        (np.zeros((1, 3), int), np.zeros((1, 3)), None, TypeError, "integer"),
        (np.zeros((1, 3), int), np.full((1, 3), 7), None, ValueError, "target 7"),
        (np.zeros((1, 3), int), np.full((1, 3), -2), None, ValueError, "target -2"),
        (np.full((1, 3), 7), np.zeros((1, 3), int), None, ValueError, "token id 7"),
        (np.zeros((1, 3), int), np.zeros((1, 3), int), np.ones((1, 2)), ValueError, "mask"),
        (np.zeros((1, 3), int), np.full((1, 3), -1), None, ValueError, "no position counts"),
    ],
)
def test_bad_batches_are_explained(
    ids: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray | None,
    error: type[Exception],
    match: str,
) -> None:
    model = GPT(MICRO, dtype=np.float64)
    with pytest.raises(error, match=match):
        model.loss_and_grads(ids, targets, mask)
