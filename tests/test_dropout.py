"""Dropout: the layer, its backward, the model's three sites, and training with it.

Gradients are checked against central finite differences in float64, with the masks held
fixed: every evaluation of the loss re-creates the generator from the same seed, so it draws
the same masks, and the loss is then an ordinary smooth function of the parameters. The
statistics (kept fraction, mean) are checked against the binomial distribution.
"""

from __future__ import annotations

import json
import math
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradcheck import numerical_grad, rel_err
from tinyrun import tiny_config

from numpylm import GPT, GPTConfig
from numpylm.cli import main
from numpylm.layers import (
    attention,
    attention_backward,
    causal_mask,
    dropout,
    dropout_backward,
    dropout_mask,
)
from numpylm.tokens.bpe import train_bpe
from numpylm.training.finetune import Example, FinetuneConfig, finetune, write_jsonl
from numpylm.training.train import (
    TRAINER_STATE,
    TrainConfig,
    resume_config,
    sharded_loss_and_grads,
    train,
)

TOL = 1e-6
P = 0.3
MICRO = GPTConfig(vocab_size=7, n_ctx=8, n_layer=2, n_head=2, n_embd=8)


def random_model(seed: int, dtype: type = np.float64) -> GPT:
    """MICRO with every parameter random (no zero biases, no unit gains)."""
    model = GPT(MICRO, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    for p in model.params.values():
        p += (rng.standard_normal(p.shape) * 0.3).astype(p.dtype)
    return model


# --------------------------------------------------------------------------------------------
# The layer


def test_dropout_backward_finite_differences() -> None:
    rng = np.random.default_rng(0)
    x, R = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))

    def f() -> float:
        return float((dropout(x, P, np.random.default_rng(1))[0] * R).sum())

    _, keep = dropout(x, P, np.random.default_rng(1))
    assert 0 < keep.sum() < keep.size  # something is dropped, something kept
    assert rel_err(numerical_grad(f, x), dropout_backward(R, keep, P)) < TOL
    assert np.all(dropout_backward(R, keep, P)[~keep] == 0)  # a dropped value learns nothing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_values_and_dtype(dtype: type) -> None:
    x = np.random.default_rng(0).standard_normal((50, 40)).astype(dtype)
    y, keep = dropout(x, 0.25, np.random.default_rng(0))
    assert y.dtype == dtype and keep.dtype == bool and keep.shape == x.shape
    assert np.all(y[~keep] == 0)
    np.testing.assert_array_equal(y[keep], x[keep] * dtype(1 / 0.75))  # scaled, not shifted


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_is_binomial(p: float) -> None:
    n = 1_000_000
    kept = int(dropout_mask((1000, 1000), p, np.random.default_rng(2)).sum())
    sd = math.sqrt(n * p * (1 - p))  # of Binomial(n, 1 - p)
    assert abs(kept - n * (1 - p)) < 5 * sd


def test_dropout_keeps_the_expected_value() -> None:
    """Inverted dropout: mean over many draws of y equals x, entry by entry."""
    p, draws = 0.4, 20_000
    x = np.random.default_rng(3).standard_normal(30)
    rng = np.random.default_rng(4)
    ys = np.stack([dropout(x, p, rng)[0] for _ in range(draws)])  # (draws, 30)
    # y_i is x_i / (1 - p) with probability 1 - p, else 0: variance x_i^2 p / (1 - p)
    sd_of_mean = np.abs(x) * math.sqrt(p / (1 - p) / draws)
    assert np.all(np.abs(ys.mean(axis=0) - x) < 5 * sd_of_mean)
    # and the draws really differ: this is not the identity
    assert (ys == 0).mean() == pytest.approx(p, abs=0.01)


def test_zero_rate_is_the_identity() -> None:
    x = np.random.default_rng(5).standard_normal((4, 6)).astype(np.float32)
    y, keep = dropout(x, 0.0, np.random.default_rng(0))
    assert keep.all() and y.dtype == np.float32
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, math.nan, math.inf, True, "0.1", None])
def test_bad_rate_is_a_clear_error(bad: Any) -> None:
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"dropout rate.*\[0, 1\)"):
        dropout(x, bad, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"dropout must be a dropout rate in \[0, 1\)"):
        GPT(MICRO).loss_and_grads(np.zeros((1, 3), int), np.zeros((1, 3), int), dropout=bad)


@pytest.mark.parametrize("case", ["causal", "causal+cache+padding"])
def test_attention_backward_with_dropout(case: str) -> None:
    rng = np.random.default_rng(6)
    B, Hh, T, D = 2, 3, 4, 5
    L = T + 2 if "cache" in case else T
    q = rng.standard_normal((B, Hh, T, D))
    k, v = rng.standard_normal((B, Hh, L, D)), rng.standard_normal((B, Hh, L, D))
    allowed = causal_mask(T, L)
    if "padding" in case:
        keys = np.ones((B, L), dtype=bool)
        keys[1, :2] = False
        allowed = allowed & keys[:, None, None, :]
    drop = (dropout_mask((B, Hh, T, L), P, rng), P)
    R = rng.standard_normal((B, Hh, T, D))

    def f() -> float:
        return float((attention(q, k, v, allowed, drop=drop)[0] * R).sum())

    y, att = attention(q, k, v, allowed, drop=drop)
    np.testing.assert_allclose(att.sum(axis=-1), 1.0)  # the returned att is before dropout
    np.testing.assert_allclose(y, (att * drop[0] / (1 - P)) @ v)  # the values saw the dropped
    dq, dk, dv = attention_backward(R, q, k, v, att, drop=drop)
    for a, g in ((q, dq), (k, dk), (v, dv)):
        assert rel_err(numerical_grad(f, a), g) < TOL


# --------------------------------------------------------------------------------------------
# The model


def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.array([[3, 1, 3, 3, 0, 6], [1, 1, 5, 2, 3, 1]])
    targets = np.random.default_rng(0).integers(0, MICRO.vocab_size, ids.shape)
    targets[0, 4] = -1
    mask = np.ones(ids.shape, dtype=bool)
    mask[1, :2] = False
    return ids, targets, mask


def test_model_gradient_with_dropout_finite_differences() -> None:
    """Every entry of every parameter, dropout 0.3 at all three sites, the masks fixed by
    seeding the generator the same way for each evaluation."""
    model = random_model(seed=0)
    ids, targets, mask = batch()

    def f() -> float:
        rng = np.random.default_rng(11)
        return model.loss_and_grads(ids, targets, mask, dropout=P, rng=rng)[0]

    loss, grads = model.loss_and_grads(ids, targets, mask, dropout=P, rng=np.random.default_rng(11))
    assert loss == f()  # the same seed, the same masks, the same loss
    assert loss != model.loss(ids, targets, mask)  # and dropout changed it
    _, plain = model.loss_and_grads(ids, targets, mask)
    for name, p in model.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype
        assert rel_err(numerical_grad(f, p), grads[name]) < TOL, name
        assert rel_err(plain[name], grads[name]) > 1e-3, name  # the masks reach every gradient


def test_the_three_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    """Masks are drawn, in order, after the embedding (B, T, C), and per block on the attention
    probabilities (B, H, T, T) and on the outputs of the attention and MLP branches (B, T, C)."""
    from numpylm.models.gpt2 import (
        backward as model_module,  # it looks the layers up in its own namespace
    )

    shapes: list[tuple[int, ...]] = []
    real_dropout, real_mask = model_module.dropout, model_module.dropout_mask

    def recording_dropout(x: np.ndarray, p: float, rng: np.random.Generator) -> Any:
        shapes.append(x.shape)
        return real_dropout(x, p, rng)

    def recording_mask(shape: tuple[int, ...], p: float, rng: np.random.Generator) -> Any:
        shapes.append(shape)
        return real_mask(shape, p, rng)

    monkeypatch.setattr(model_module, "dropout", recording_dropout)
    monkeypatch.setattr(model_module, "dropout_mask", recording_mask)
    ids, targets, _ = batch()
    random_model(seed=1).loss_and_grads(ids, targets, dropout=P, rng=np.random.default_rng(0))
    B, T, C, Hh = 2, 6, MICRO.n_embd, MICRO.n_head
    assert shapes == [(B, T, C)] + [(B, Hh, T, T), (B, T, C), (B, T, C)] * MICRO.n_layer


def test_zero_dropout_is_bit_identical_and_draws_nothing() -> None:
    model = random_model(seed=2, dtype=np.float32)
    ids, targets, mask = batch()
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    loss0, g0 = model.loss_and_grads(ids, targets, mask, dropout=0.0, rng=rng)
    loss, g = model.loss_and_grads(ids, targets, mask)
    assert loss0 == loss
    assert all(np.array_equal(g0[k], g[k]) for k in g)
    assert rng.bit_generator.state == before  # no mask was made


def test_calling_the_model_never_drops() -> None:
    """Dropout leaves no state behind: after training calls with dropout, model(ids) and
    model.loss are what they were (and the same every time)."""
    model = random_model(seed=3)
    ids, targets, _ = batch()
    logits = model(ids)
    loss = model.loss(ids, targets)
    params = {k: v.copy() for k, v in model.params.items()}
    rng = np.random.default_rng(0)
    dropped = {model.loss_and_grads(ids, targets, dropout=0.5, rng=rng)[0] for _ in range(3)}
    assert len(dropped) == 3  # new masks on every call
    assert all(np.array_equal(params[k], model.params[k]) for k in params)
    np.testing.assert_array_equal(model(ids), logits)
    assert model.loss(ids, targets) == loss


def test_float32_and_float64_drop_the_same_entries() -> None:
    m64 = random_model(seed=4)
    m32 = GPT(MICRO, params={k: v.astype(np.float32) for k, v in m64.params.items()})
    ids, targets, mask = batch()
    l64, g64 = m64.loss_and_grads(ids, targets, mask, dropout=P, rng=np.random.default_rng(5))
    l32, g32 = m32.loss_and_grads(ids, targets, mask, dropout=P, rng=np.random.default_rng(5))
    assert l32 == pytest.approx(l64, rel=1e-5)
    for name in g64:
        assert g32[name].dtype == np.float32, name
        assert rel_err(g64[name], g32[name].astype(np.float64)) < 1e-4, name


# --------------------------------------------------------------------------------------------
# Training


def test_sharded_dropout_does_not_depend_on_thread_timing() -> None:
    """Each shard's generator is derived before the threads start: the result is the same
    whether the shards run at once or one after the other."""
    model = GPT(MICRO, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 7, (6, 8)), rng.integers(0, 7, (6, 8))
    results = []
    for workers in (3, 1, 3):
        with ThreadPoolExecutor(workers) as pool:
            results.append(
                sharded_loss_and_grads(
                    model, x, y, pool, 3, dropout=P, rng=np.random.default_rng(9)
                )
            )
    for loss, grads in results[1:]:
        assert loss == results[0][0]
        assert all(np.array_equal(grads[k], results[0][1][k]) for k in grads)
    assert results[0][0] != sharded_loss_and_grads(model, x, y, None, 1)[0]


def config(data: Path, out: Path, **changes: Any) -> TrainConfig:
    """The training tests' tiny run, shorter, in float64 and with dropout 0.2."""
    shorter = dict(n_ctx=16, steps=6, warmup=1, eval_every=3, save_every=2, dtype="float64")
    return tiny_config(data, out, **{**shorter, "dropout": 0.2, **changes})


@pytest.mark.parametrize("threads", [1, 2])
def test_resume_with_dropout_is_bit_for_bit(
    threads: int, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = train(config(corpus, tmp_path / "full", threads=threads), progress=False)
    plain = train(config(corpus, tmp_path / "plain", threads=threads, dropout=0.0), progress=False)
    assert reference.losses[1:] != plain.losses[1:]  # dropout changed the run
    assert reference.history[1:] != plain.history[1:]

    real, calls = GPT.loss_and_grads, [0]

    def ctrl_c_at_step_3(self: GPT, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3 * threads:  # the last shard of step 3: Ctrl-C, as a terminal sends it
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(GPT, "loss_and_grads", ctrl_c_at_step_3)
    stopped = train(config(corpus, out, threads=threads), progress=False)
    monkeypatch.undo()
    assert stopped.interrupted and stopped.step == 3
    resumed = train(resume_config(out), resume=True, progress=False)
    assert resumed.losses == reference.losses  # exactly
    assert resumed.history == reference.history
    assert json.loads((out / TRAINER_STATE).read_text())["args"]["dropout"] == 0.2


def test_runs_saved_before_dropout_resume_without_it(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(corpus, out, steps=2, dropout=0.0), progress=False)
    path = out / TRAINER_STATE
    state = json.loads(path.read_text())
    del state["args"]["dropout"]  # as a run saved by an older numpylm
    path.write_text(json.dumps(state))
    assert resume_config(out).dropout == 0.0


@pytest.mark.parametrize("bad", [1.0, -0.5, math.nan, "0.2"])
def test_train_and_finetune_configs_check_the_rate(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dropout .*\[0, 1\)"):
        config(tmp_path / "x.txt", tmp_path / "run", dropout=bad)
    with pytest.raises(ValueError, match=r"dropout .*\[0, 1\)"):
        FinetuneConfig(data="x.jsonl", out=str(tmp_path / "run"), dropout=bad)


@pytest.mark.parametrize("command", ["train", "finetune"])
@pytest.mark.parametrize("value", ["1", "-0.1", "nan", "lots"])
def test_bad_dropout_flag_exits_2_with_one_line(
    command: str, value: str, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--data", str(corpus), "--out", str(tmp_path / "run"), "--dropout", value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"numpylm {command}: error: argument --dropout:")
    assert "[0, 1)" in err[-1] or "expected a number" in err[-1]


def test_dropout_flag_reaches_the_run(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--data", str(corpus), "--out", str(out), "--tokenizer", "bpe:280", "--config"]
    flags += ["tiny", "--n-ctx", "16", "--steps", "2", "--batch-size", "2", "--eval-batches", "1"]
    assert main(["train", *flags, "--dropout", "0.15"]) == 0
    assert json.loads((out / TRAINER_STATE).read_text())["args"]["dropout"] == 0.15


def test_train_help_mentions_dropout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--dropout" in capsys.readouterr().out


def test_finetune_drops_in_training_steps_only(tmp_path: Path) -> None:
    examples = [
        Example(f"Count from {i} to {i + 3}.", f"{i} {i + 1} {i + 2} {i + 3}") for i in range(30)
    ]
    data = write_jsonl(tmp_path / "train.jsonl", examples)
    tokenizer = train_bpe("".join(e.prompt + e.response for e in examples), 280)
    base = tmp_path / "base"
    GPT(
        GPTConfig(vocab_size=tokenizer.n_vocab, n_ctx=32, n_layer=1, n_head=2, n_embd=16)
    ).save_pretrained(base)
    tokenizer.save_pretrained(base)
    runs = {
        p: finetune(
            FinetuneConfig(
                data=str(data),
                out=str(tmp_path / f"ft{p}"),
                model=str(base),
                steps=3,
                batch_size=4,
                dropout=p,
            ),
            progress=False,
        )
        for p in (0.0, 0.3)
    }
    assert runs[0.3].history[0]["val_loss"] == runs[0.0].history[0]["val_loss"]  # no dropout
    assert runs[0.3].losses[0] != runs[0.0].losses[0]  # the same weights and batch, dropped
    saved = json.loads((tmp_path / "ft0.3" / TRAINER_STATE).read_text())
    assert saved["args"]["dropout"] == 0.3
