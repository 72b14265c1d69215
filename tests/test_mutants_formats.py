"""Hugging Face's GPT-2 format as numpylm writes and checks it: the dtype a file says it holds,
the config's fields, and the refusals that name what is wrong.

Written for the survivors of a mutation run over ``formats.py`` (docs/reliability.md, "Mutation
testing"). The files are read back here with ``struct`` and ``json`` alone, not with numpylm.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from numpylm import GPT, GPTConfig
from numpylm.io import formats
from numpylm.io.checkpoint import CheckpointError, write_json, write_safetensors
from numpylm.models.gpt2 import weights
from numpylm.models.gpt2.model import param_shapes

CONFIG = GPTConfig(vocab_size=259, n_ctx=8, n_layer=1, n_head=2, n_embd=8)


def header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: 8 bytes of little-endian length, then the JSON."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])


@pytest.mark.parametrize(
    ("dtype", "name", "code"),
    [
        (np.float16, "float16", "F16"),
        (np.float32, "float32", "F32"),
        (np.float64, "float64", "F64"),
    ],
)
def test_save_pretrained_records_the_dtype_it_wrote(
    tmp_path: Path, dtype: type, name: str, code: str
) -> None:
    model = GPT(CONFIG, seed=0)
    model.save_pretrained(tmp_path, dtype=dtype)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["torch_dtype"] == name
    tensors = {
        k: v for k, v in header(tmp_path / "model.safetensors").items() if k != "__metadata__"
    }
    assert set(tensors) == {"transformer." + k for k in param_shapes(CONFIG)}
    assert {v["dtype"] for v in tensors.values()} == {code}
    again = GPT.from_pretrained(tmp_path, dtype=np.float32)
    for k, p in model.params.items():
        np.testing.assert_array_equal(again.params[k], p.astype(dtype).astype(np.float32))


def test_a_model_saves_in_its_own_dtype_by_default(tmp_path: Path) -> None:
    GPT(CONFIG, seed=0, dtype=np.float64).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "float64"


def test_write_model_refuses_a_dtype_that_is_not_a_float(tmp_path: Path) -> None:
    model = GPT(CONFIG, seed=0)
    with pytest.raises(ValueError, match="dtype must be float16, float32 or float64, got int32"):
        formats.write_model(
            tmp_path, model.config.to_hf(), model.params, np.int32, weights.params_to_hf
        )
    assert list(tmp_path.iterdir()) == []


def test_the_config_written_is_gpt2s() -> None:
    hf = weights.config_to_hf(
        {"vocab_size": 259, "n_ctx": 8, "n_layer": 3, "n_head": 2, "n_embd": 8}
    )
    assert hf["architectures"] == ["GPT2LMHeadModel"] and hf["model_type"] == "gpt2"
    assert (hf["vocab_size"], hf["n_positions"], hf["n_ctx"]) == (259, 8, 8)
    assert (hf["n_layer"], hf["n_head"], hf["n_embd"], hf["n_inner"]) == (3, 2, 8, None)
    assert hf["activation_function"] == "gelu_new" and hf["layer_norm_epsilon"] == 1e-5
    assert hf["resid_pdrop"] == hf["embd_pdrop"] == hf["attn_pdrop"] == 0.0
    assert hf["scale_attn_weights"] is True and hf["tie_word_embeddings"] is True
    assert hf["scale_attn_by_inverse_layer_idx"] is False
    assert hf["reorder_and_upcast_attn"] is False
    assert hf["bos_token_id"] == hf["eos_token_id"] == 258
    assert hf["torch_dtype"] == "float32"  # what a config describes until the weights say else
    assert len(hf) == 21  # and nothing else
    # and it reads back as the same shape
    assert weights.config_from_hf(hf, dict) == {
        "vocab_size": 259,
        "n_ctx": 8,
        "n_layer": 3,
        "n_head": 2,
        "n_embd": 8,
    }


def test_a_config_without_shapes_is_gpt2_small() -> None:
    fields = weights.config_from_hf({}, dict)
    assert fields == {
        "vocab_size": 50257,
        "n_ctx": 1024,
        "n_layer": 12,
        "n_head": 12,
        "n_embd": 768,
    }
    assert weights.config_from_hf({"n_ctx": 64}, dict)["n_ctx"] == 64  # the older key
    assert weights.config_from_hf({"n_positions": 32, "n_ctx": 64}, dict)["n_ctx"] == 32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "llama"}, "src.json: model_type is 'llama', not GPT-2's: numpylm.load"),
        (
            {"activation_function": "relu"},
            "src.json: activation_function='relu' is not supported "
            "(numpylm computes GPT-2 with activation_function='gelu_new')",
        ),
        ({"n_inner": 16}, "n_inner=16 is not supported"),
        ({"scale_attn_weights": False}, "scale_attn_weights=False is not supported"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings=False is not supported"),
        (
            {"layer_norm_epsilon": 1e-6},
            "src.json: layer_norm_epsilon=1e-06 is not supported (GPT-2 uses 1e-5)",
        ),
        ({"layer_norm_epsilon": True}, "layer_norm_epsilon=True"),
        ({"layer_norm_epsilon": "1e-5"}, "layer_norm_epsilon='1e-5'"),
        ({"n_layer": 1.5}, "n_layer must be a positive integer, got 1.5; the file is not a GPT-2"),
        ({"n_head": 3}, "src.json: "),  # 8 channels do not split into 3 heads: make's refusal
    ],
)
def test_variants_are_refused_naming_the_file(change: dict[str, Any], message: str) -> None:
    hf = weights.config_to_hf(
        {"vocab_size": 259, "n_ctx": 8, "n_layer": 1, "n_head": 2, "n_embd": 8}
    )
    with pytest.raises(CheckpointError) as refused:
        weights.config_from_hf(hf | change, GPTConfig, "src.json")
    assert str(refused.value).startswith("src.json: ") and message in str(refused.value)


def test_n_inner_of_four_times_the_width_is_gpt2() -> None:
    hf = {"n_embd": 8, "n_head": 2, "n_inner": 32, "layer_norm_epsilon": 1e-5}
    assert weights.config_from_hf(hf, dict)["n_embd"] == 8


def tensors(model: GPT, prefix: str = "transformer.") -> dict[str, np.ndarray]:
    return {prefix + k: v for k, v in model.params.items()}


def test_params_from_hf_reads_both_spellings_and_skips_the_mask_buffers() -> None:
    model = GPT(CONFIG, seed=0)
    shapes = param_shapes(CONFIG)
    for prefix in ("transformer.", ""):
        t = tensors(model, prefix) | {f"{prefix}h.0.attn.bias": np.ones((1, 1, 8, 8), np.float32)}
        t[f"{prefix}h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
        params = weights.params_from_hf(t, shapes, Path("m"))
        assert set(params) == set(shapes)
        np.testing.assert_array_equal(params["wte.weight"], model.params["wte.weight"])


def test_lm_head_stands_in_for_a_missing_wte_and_must_match_it() -> None:
    model = GPT(CONFIG, seed=0)
    shapes = param_shapes(CONFIG)
    t = tensors(model)
    wte = t.pop("transformer.wte.weight")
    params = weights.params_from_hf(t | {"lm_head.weight": wte}, shapes, Path("m"))
    np.testing.assert_array_equal(params["wte.weight"], wte)
    same = weights.params_from_hf(tensors(model) | {"lm_head.weight": wte + 1}, shapes, Path("m"))
    np.testing.assert_array_equal(same["wte.weight"], wte)  # tied: wte wins, lm_head is a copy
    with pytest.raises(
        CheckpointError,
        match=r"m: lm_head.weight has shape \(259, 4\) but "
        r"wte.weight has \(259, 8\); GPT-2 ties them",
    ):
        weights.params_from_hf(tensors(model) | {"lm_head.weight": wte[:, :4]}, shapes, Path("m"))


def test_integer_weights_are_refused_naming_the_tensor() -> None:
    t = tensors(GPT(CONFIG, seed=0))
    t["transformer.ln_f.bias"] = t["transformer.ln_f.bias"].view(np.int32)
    with pytest.raises(
        CheckpointError,
        match=r"m: tensor 'ln_f.bias' is stored as int32 \('i' "
        "kind\\), but a model's weights are floating point",
    ):
        weights.params_from_hf(t, param_shapes(CONFIG), Path("m"))


def test_check_shapes_names_what_is_missing_unexpected_or_misshapen() -> None:
    shapes = param_shapes(CONFIG)
    params = {k: np.zeros(s) for k, s in shapes.items()}
    formats.check_shapes(shapes, params)  # exactly right: no error
    extra = params | {f"x{i}": np.zeros(1) for i in range(7)}
    del extra["ln_f.bias"]
    with pytest.raises(
        CheckpointError,
        match=r"^parameters do not match the config: missing "
        r"ln_f.bias; unexpected x0, x1, x2, x3, x4 and 2 more$",
    ):
        formats.check_shapes(shapes, extra)
    with pytest.raises(
        CheckpointError,
        match=r"^parameters do not match the config: unexpected "
        r"x0$",
    ):
        formats.check_shapes(shapes, params | {"x0": np.zeros(1)})
    bad = params | {"ln_f.bias": np.zeros(9)}
    with pytest.raises(
        CheckpointError,
        match=r"^tensor 'ln_f.bias' has shape \(9,\) but the "
        r"file needs \(8,\)$",
    ):
        formats.check_shapes(shapes, bad, "the file")
    with pytest.raises(CheckpointError, match="but the config needs"):
        formats.check_shapes(shapes, bad)


def test_params_from_hf_names_the_source_of_a_shape_error() -> None:
    t = tensors(GPT(CONFIG, seed=0))
    del t["transformer.ln_f.bias"]
    with pytest.raises(
        CheckpointError,
        match=r"^m: parameters do not match the config: missing "
        r"ln_f.bias$",
    ):
        weights.params_from_hf(t, param_shapes(CONFIG), Path("m"))


@pytest.mark.parametrize("name", ["gpt2-medium", "openai-community/gpt2-medium"])
def test_presets(name: str) -> None:
    assert weights.preset(name) == {"n_layer": 24, "n_head": 16, "n_embd": 1024}


def test_an_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown preset 'gpt3'; choose from \['gpt2', "
        r"'gpt2-large', 'gpt2-medium', 'gpt2-xl'\]",
    ):
        weights.preset("gpt3")


def test_read_model_needs_a_config(tmp_path: Path) -> None:
    GPT(CONFIG, seed=0).save_pretrained(tmp_path)
    hf, t, where = formats.read_model(tmp_path)
    assert hf["n_embd"] == 8 and where == tmp_path and "transformer.wte.weight" in t
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no config\.json: it is not a model directory"):
        formats.read_model(tmp_path)


def test_a_refusal_names_config_json_by_default() -> None:
    with pytest.raises(CheckpointError, match=r"^config\.json: model_type is 'llama', not GPT-2's"):
        weights.config_from_hf({"model_type": "llama"}, dict)


def test_read_model_reads_every_shard(tmp_path: Path) -> None:
    model = GPT(CONFIG, seed=0)
    t = tensors(model)
    names = sorted(t)
    shards = {
        "model-00001-of-00002.safetensors": names[:5],
        "model-00002-of-00002.safetensors": names[5:],
    }
    for shard, held in shards.items():
        write_safetensors(tmp_path / shard, {k: t[k] for k in held})
    weight_map = {k: shard for shard, held in shards.items() for k in held}
    write_json(tmp_path / "model.safetensors.index.json", {"weight_map": weight_map})
    write_json(tmp_path / "config.json", model.config.to_hf())
    _, read, _ = formats.read_model(tmp_path)
    assert sorted(read) == names
    again = GPT.from_pretrained(tmp_path)
    for k, p in model.params.items():
        np.testing.assert_array_equal(again.params[k], p)


def test_buffers_and_lm_head_may_come_first() -> None:
    """A file's tensors come in any order: the skipped buffers and the tied lm_head first."""
    model = GPT(CONFIG, seed=0)
    first = {
        "transformer.h.0.attn.bias": np.ones((1, 1, 8, 8), np.float32),
        "lm_head.weight": model.params["wte.weight"],
    }
    params = weights.params_from_hf(first | tensors(model), param_shapes(CONFIG), Path("m"))
    assert set(params) == set(param_shapes(CONFIG))


def test_the_integer_weights_message_in_full() -> None:
    t = tensors(GPT(CONFIG, seed=0))
    t["transformer.ln_f.bias"] = t["transformer.ln_f.bias"].view(np.int32)
    with pytest.raises(CheckpointError) as refused:
        weights.params_from_hf(t, param_shapes(CONFIG), Path("m"))
    assert str(refused.value) == (
        "m: tensor 'ln_f.bias' is stored as int32 ('i' kind), but a model's weights are floating "
        "point (F16, BF16, F32 or F64): the file is corrupt, or it is not a model's weights"
    )


@pytest.mark.parametrize(
    ("n", "listed"), [(5, "x0, x1, x2, x3, x4"), (6, "x0, x1, x2, x3, x4 and 1 more")]
)
def test_at_most_five_names_are_listed(n: int, listed: str) -> None:
    with pytest.raises(CheckpointError) as refused:
        formats.check_shapes({}, {f"x{i}": np.zeros(1) for i in range(n)})
    assert str(refused.value) == f"parameters do not match the config: unexpected {listed}"
