"""Data parallelism across threads gives the unsplit batch's loss and gradient."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from numpylm import GPT
from numpylm.training.train import sharded_loss_and_grads


@pytest.mark.parametrize("threads", [2, 3])
def test_sharded_equals_whole_batch(threads: int, tiny_model64: GPT) -> None:
    model = tiny_model64
    V = model.config.vocab_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (5, 12))
    y = rng.integers(0, V, (5, 12))
    y[0, :7] = -1  # shards count different numbers of targets: weights must follow the counts
    y[3] = -1  # and one row counts none at all
    loss, grads = model.loss_and_grads(x, y)
    with ThreadPoolExecutor(threads) as pool:
        s_loss, s_grads = sharded_loss_and_grads(model, x, y, pool, threads)
    assert s_loss == pytest.approx(loss, rel=1e-12)
    assert s_grads.keys() == grads.keys()
    for name, g in grads.items():
        np.testing.assert_allclose(s_grads[name], g, rtol=1e-10, atol=1e-14, err_msg=name)


def test_sharded_keeps_float32(tiny_model: GPT) -> None:
    model = tiny_model
    x = np.arange(24).reshape(2, 12) % model.config.vocab_size
    with ThreadPoolExecutor(2) as pool:
        loss, grads = sharded_loss_and_grads(model, x, x, pool, 2)
    assert isinstance(loss, float)
    assert all(g.dtype == np.float32 for g in grads.values())
