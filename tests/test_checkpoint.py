"""numpylm's own safetensors reader agrees with the safetensors library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from numpylm.io.checkpoint import read_safetensors


def test_reads_what_safetensors_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal(7).astype(np.float16),
        "f64": rng.standard_normal((2, 2, 2)),
        "i64": np.arange(4, dtype=np.int64),
        "scalar": np.array(3, dtype=np.int64),  # 0-d stays 0-d
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_file(tensors, tmp_path / "t.safetensors", metadata={"format": "np"})
    got = read_safetensors(tmp_path / "t.safetensors", skip=["f64"])
    assert set(got) == set(tensors) - {"f64"}
    for name, value in got.items():
        assert value.dtype == tensors[name].dtype and value.shape == tensors[name].shape, name
        np.testing.assert_array_equal(value, tensors[name])


def test_bfloat16_becomes_exact_float32(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    values = torch.tensor([[1.5, -2.25], [3.0e38, 1.0e-3]], dtype=torch.bfloat16)
    save_torch({"w": values}, tmp_path / "bf16.safetensors")
    got = read_safetensors(tmp_path / "bf16.safetensors")["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values.float().numpy())
