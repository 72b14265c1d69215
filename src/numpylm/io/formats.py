"""Hugging Face's model format, what every family shares: a directory (or Hub id) of
``config.json`` and safetensors files read and written whole, weights checked to be finite
floating point, parameters checked against the shapes a config gives.

What differs by family (the config's fields, the tensors' names) is each family's
``weights`` module (``models.gpt2.weights``, ``models.llama.weights``). Files themselves are
``checkpoint.py``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import memory
from . import checkpoint
from .checkpoint import CheckpointError

Shapes = dict[str, tuple[int, ...]]
C = TypeVar("C")


def read_model(
    name_or_path: str | os.PathLike[str],
) -> tuple[dict[str, Any], dict[str, np.ndarray], Path]:
    """A Hugging Face model directory or Hub id -> (``config.json`` as a dict, every tensor of
    its safetensors files by name, the local directory they came from)."""
    model_dir = checkpoint.resolve(name_or_path)
    files = checkpoint.weight_files(model_dir)  # first: it explains a pickle-only directory
    config_path = model_dir / checkpoint.CONFIG_FILE
    if not os.path.lexists(config_path):
        raise CheckpointError(
            f"{model_dir} has no {checkpoint.CONFIG_FILE}: it is not a model directory"
        )
    stored = sum(path.stat().st_size for path in files)
    memory.fits(
        2 * stored,  # the tensors as read, and the model's own arrays made from them
        f"loading the {memory.size(stored)} of weights in {model_dir}",
        "use a smaller model, or a machine with more memory",
    )
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        tensors |= checkpoint.read_safetensors(path)
    return checkpoint.read_json(config_path), tensors, model_dir


def write_model(
    directory: str | os.PathLike[str],
    hf: dict[str, Any],
    params: dict[str, np.ndarray],
    dtype: np.dtype[Any] | type,
    to_hf: Callable[[dict[str, np.ndarray], np.dtype[Any]], dict[str, np.ndarray]],
) -> Path:
    """Write ``config.json`` (``hf``, with ``torch_dtype``) and ``model.safetensors`` (the
    parameters as ``dtype``: float16, float32 or float64) into ``directory``, each atomically.
    ``to_hf(params, dtype)`` names and converts the tensors (each family's ``weights`` module
    has one)."""
    out, stored = Path(directory), np.dtype(dtype)
    if stored not in (np.float16, np.float32, np.float64):
        raise ValueError(f"dtype must be float16, float32 or float64, got {stored}")
    tensors = to_hf(params, stored)
    checkpoint.write_safetensors(out / checkpoint.WEIGHTS_FILE, tensors)
    checkpoint.write_json(out / checkpoint.CONFIG_FILE, hf | {"torch_dtype": str(stored)})
    return out


def check_floating(t: np.ndarray, name: str, source: Path) -> None:
    """Refuse a weight that is not floating point (the file's header is the only record of a
    tensor's type, so float32 bytes relabelled as int32 are caught here), or that holds a NaN
    or an infinity, naming the tensor."""
    if t.dtype.kind != "f":
        raise CheckpointError(
            f"{source}: tensor {name!r} is stored as {t.dtype} ({t.dtype.kind!r} kind), but "
            "a model's weights are floating point (F16, BF16, F32 or F64): the file is "
            "corrupt, or it is not a model's weights"
        )
    if not np.isfinite(t).all():  # generation would print NaN's noise, training stop
        bad = np.flatnonzero(~np.isfinite(t))
        raise CheckpointError(
            f"{source}: tensor {name!r} holds {len(bad):,} value(s) that are NaN or "
            f"infinite (the first at flat index {bad[0]}: {t.reshape(-1)[bad[0]]}); the "
            "weights are broken: save or fetch the model again"
        )


def check_shapes(
    expected: Shapes, params: dict[str, np.ndarray], described: str = "the config"
) -> None:
    """Check that ``params`` has exactly the names and shapes in ``expected`` (which
    ``described`` names in the message, e.g. the config's fields).

    Raises:
        CheckpointError: naming the missing and unexpected tensors, or the first tensor whose
            shape differs.
    """
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if extra:
            parts.append(f"unexpected {_few(extra)}")
        raise CheckpointError("parameters do not match the config: " + "; ".join(parts))
    for name, shape in expected.items():
        got = tuple(np.shape(params[name]))
        if got != shape:
            raise CheckpointError(f"tensor {name!r} has shape {got} but {described} needs {shape}")


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
