"""GPT-2's initialisation: the random weights a model starts training from."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def init_params(
    shapes: dict[str, tuple[int, ...]],
    n_layer: int,
    seed: int = 0,
    dtype: np.dtype[Any] | type = np.float32,
) -> dict[str, np.ndarray]:
    """Parameters of the given names and shapes (``model.param_shapes``), as GPT-2 initialises
    them: weights N(0, 0.02), the two projections that write into the residual stream
    (``c_proj``) scaled by 1/sqrt(2 * n_layer) so the stream's variance does not grow with
    depth, zero biases, LayerNorm gains 1. The same seed gives the same weights."""
    rng = np.random.default_rng(seed)
    resid_std = 0.02 / math.sqrt(2 * n_layer)
    params = {}
    for name, shape in shapes.items():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            p = np.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            p = np.zeros(shape, dtype=dtype)
        else:
            std = resid_std if name.endswith("c_proj.weight") else 0.02
            p = rng.standard_normal(shape, dtype=dtype) * std
        params[name] = p
    return params
