"""GPT-2's weights: the named sizes, the translation of Hugging Face's ``config.json`` and
tensor names, and the random initialisation a model starts training from.

numpylm's parameters carry Hugging Face's GPT-2 names already (``h.0.attn.c_attn.weight``; the
files add a ``transformer.`` prefix), so translating a checkpoint is mostly checking it: that
the config describes GPT-2 exactly and not a variant, and that every tensor is there with the
right shape (``io.formats``, shared with the other families).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ...checks import positive_int
from ...io.checkpoint import CheckpointError
from ...io.formats import Shapes, check_floating, check_shapes

C = TypeVar("C")

GPT2_SIZES = {  # name: (n_layer, n_head, n_embd)
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}
"""The published GPT-2 sizes, by their Hugging Face Hub ids."""

PRESETS: dict[str, tuple[int, int, int, int]] = {  # name: (n_layer, n_head, n_embd, n_ctx)
    "tiny": (2, 2, 64, 64),
    "mini": (4, 4, 128, 128),
    "small": (6, 6, 192, 256),
    "medium": (8, 8, 256, 256),
}
"""Small shapes to train on a CPU, by name; ``--config`` also takes GPT-2's sizes (``gpt2``,
``gpt2-medium``, ...), which are far too large to train in NumPy but fine to fine-tune a little."""


# Buffers that old GPT-2 checkpoints store beside the weights; they are constants, not weights.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_PREFIX = "transformer."


def preset(name: str) -> dict[str, int]:
    """The shape of a published GPT-2 size (``gpt2``, ``gpt2-medium``, ``gpt2-large``,
    ``gpt2-xl``, with or without ``openai-community/``) as ``GPTConfig`` fields."""
    try:
        n_layer, n_head, n_embd = GPT2_SIZES[name.removeprefix("openai-community/")]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(GPT2_SIZES)}") from None
    return {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd}


def config_to_hf(fields: dict[str, int]) -> dict[str, Any]:
    """``GPTConfig`` fields (``vocab_size``, ``n_ctx``, ``n_layer``, ``n_head``, ``n_embd``) as
    a Hugging Face ``config.json`` for ``GPT2LMHeadModel``."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": fields["vocab_size"],
        "n_positions": fields["n_ctx"],
        "n_ctx": fields["n_ctx"],
        "n_layer": fields["n_layer"],
        "n_head": fields["n_head"],
        "n_embd": fields["n_embd"],
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": fields["vocab_size"] - 1,
        "eos_token_id": fields["vocab_size"] - 1,
        "torch_dtype": "float32",
    }


def config_from_hf(hf: dict[str, Any], make: Callable[..., C], source: str = "config.json") -> C:
    """A Hugging Face GPT-2 ``config.json`` (as a dict) -> ``make(**fields)`` (``make`` is
    ``GPTConfig``), refusing variants that would compute something other than GPT-2. Every
    refusal, ``make``'s own included, is a ``CheckpointError`` that names ``source``."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(
            f"{source}: model_type is {hf.get('model_type')!r}, not GPT-2's: numpylm.load and "
            "numpylm.from_pretrained read each family with its own model class"
        )

    def count(key: str, default: int, *fallbacks: str) -> int:
        # A shape read from the file: a JSON integer >= 1, never rounded ("n_layer": 1.5 is
        # a broken file, not one layer), and never a string or a boolean.
        value = next((hf[k] for k in (key, *fallbacks) if k in hf), default)
        try:
            return positive_int(key, value)
        except ValueError as e:
            raise CheckpointError(f"{source}: {e}; the file is not a GPT-2 config") from None

    n_embd = count("n_embd", 768)
    unsupported = {
        "activation_function": (hf.get("activation_function", "gelu_new"), "gelu_new"),
        "n_inner": (hf.get("n_inner") or 4 * n_embd, 4 * n_embd),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), True),
        "scale_attn_by_inverse_layer_idx": (
            hf.get("scale_attn_by_inverse_layer_idx", False),
            False,
        ),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True), True),
    }
    for key, (value, expected) in unsupported.items():
        if value != expected:
            raise CheckpointError(
                f"{source}: {key}={value!r} is not supported (numpylm computes GPT-2 with "
                f"{key}={expected!r})"
            )
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isclose(eps, 1e-5):
        raise CheckpointError(
            f"{source}: layer_norm_epsilon={eps!r} is not supported (GPT-2 uses 1e-5)"
        )
    fields = {
        "vocab_size": count("vocab_size", 50257),
        "n_ctx": count("n_positions", 1024, "n_ctx"),
        "n_layer": count("n_layer", 12),
        "n_head": count("n_head", 12),
        "n_embd": n_embd,
    }
    try:
        return make(**fields)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e


def params_from_hf(
    tensors: dict[str, np.ndarray], shapes: Shapes, source: Path
) -> dict[str, np.ndarray]:
    """Hugging Face GPT-2 tensors -> numpylm's parameters (the same names, without
    ``transformer.``), checked against ``shapes`` (the model's ``param_shapes``).

    Both key spellings (``h.0...`` and ``transformer.h.0...``) are accepted; the attention mask
    buffers are skipped and ``lm_head.weight``, when present, must equal ``wte.weight``'s shape
    (GPT-2 ties them). Every weight must be floating point: the file's header is the only
    record of a tensor's type, so float32 bytes relabelled as int32 are refused here. And
    finite: a NaN would otherwise surface as "training diverged" or as noise.
    """
    params: dict[str, np.ndarray] = {}
    lm_head = None
    for name, t in tensors.items():
        name = name.removeprefix(_PREFIX)
        if name.endswith(_BUFFER_SUFFIXES):
            continue  # the causal mask stored as a buffer; numpylm builds its own
        check_floating(t, name, source)
        if name == "lm_head.weight":
            lm_head = t
            continue
        params[name] = t
    wte = params.get("wte.weight")
    if lm_head is not None and wte is not None and lm_head.shape != wte.shape:
        raise CheckpointError(
            f"{source}: lm_head.weight has shape {lm_head.shape} but wte.weight has "
            f"{wte.shape}; GPT-2 ties them"
        )
    if wte is None and lm_head is not None:
        params["wte.weight"] = lm_head
    try:
        check_shapes(shapes, params)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    return params


def params_to_hf(params: dict[str, np.ndarray], dtype: np.dtype[Any]) -> dict[str, np.ndarray]:
    """numpylm's parameters -> the tensors of a Hugging Face file, converted to ``dtype``."""
    return {_PREFIX + name: p.astype(dtype, copy=False) for name, p in params.items()}


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
