"""The Llama family against Hugging Face ``transformers``: random checkpoints that transformers
writes (and reads back from numpylm), a tiny quantised GGUF file written here with llama.cpp's
``gguf`` package, and SmolLM2-135M-Instruct from its real GGUF file (skipped where absent)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from numpylm.generation import generate
from numpylm.io.checkpoint import CheckpointError
from numpylm.models.llama import Llama, LlamaConfig, weights
from numpylm.models.llama.weights import config_from_hf

F32_TOL = 1e-4
FIXTURES = Path(__file__).parent / "fixtures"


def maker() -> Any:
    """tests/fixtures/make_tiny_llama.py, which builds the random transformers models (it
    imports torch and transformers, so only the tests that need them import it)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from fixtures import make_tiny_llama

    return make_tiny_llama


def hf_logits(model: Any, ids: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.numpy()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def hf_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    m = maker()
    fields = m.LLAMA if request.param == "llama" else m.QWEN2
    hf = m.hf_model(request.param, fields, seed=10)
    out = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(out)
    return request.param, hf, out


def test_transformers_checkpoint_loads_with_the_same_logits(hf_pair: Any) -> None:
    kind, hf, path = hf_pair
    model = Llama.from_pretrained(path)
    c = model.config
    if kind == "llama":
        assert (c.n_head, c.n_kv_head, c.tie_word_embeddings, c.qkv_bias) == (6, 2, True, False)
        assert "lm_head.weight" not in model.params
    else:
        assert (c.rope_theta, c.tie_word_embeddings, c.qkv_bias) == (1e6, False, True)
        bias = model.params["layers.1.self_attn.qkv_proj.bias"]  # q, k and v's, stacked
        assert bias.shape == (c.n_embd + 2 * c.n_kv_head * c.head_size,)
        assert np.abs(bias).min() > 0
    ids = np.random.default_rng(0).integers(0, c.vocab_size, size=(3, 32))
    logits, ref = model(ids), hf_logits(hf, ids)
    assert logits.dtype == np.float32 and np.abs(ref).max() > 1.0
    assert np.abs(logits - ref).max() <= F32_TOL


def test_save_pretrained_loads_back_in_transformers(hf_pair: Any, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    kind, _hf, path = hf_pair
    model = Llama.from_pretrained(path)
    rng = np.random.default_rng(5)  # new values, so nothing comes from the first file
    model = Llama(model.config, params={k: rng.standard_normal(v.shape, dtype=np.float32) * 0.3
                                        for k, v in model.params.items()})  # fmt: skip
    model.save_pretrained(tmp_path)
    back, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert type(back).__name__ == ("LlamaForCausalLM" if kind == "llama" else "Qwen2ForCausalLM")
    ids = rng.integers(0, model.config.vocab_size, size=(2, 32))
    assert np.abs(model(ids) - hf_logits(back.eval(), ids)).max() <= F32_TOL
    assert Llama.from_pretrained(tmp_path).config == model.config


def test_cache_padding_and_greedy_match(hf_pair: Any) -> None:
    _, hf, path = hf_pair
    model = Llama.from_pretrained(path)
    V = model.config.vocab_size
    ids = np.random.default_rng(1).integers(0, V, size=(2, 20))
    full = model(ids)
    cache = model.new_cache(2)
    assert cache.k.shape == (2, 2, 2, 32, model.config.head_size)  # H_kv heads, not H
    steps = [model(ids[:, :12], cache)] + [model(ids[:, t : t + 1], cache) for t in range(12, 20)]
    assert np.abs(np.concatenate(steps, axis=1) - full).max() <= 1e-5
    # a left-padded batch: the short row gets what it gets alone
    padded, mask = np.zeros((2, 20), dtype=np.int64), np.ones((2, 20), dtype=bool)
    padded[0, 5:], mask[0, :5] = ids[0, :15], False
    padded[1] = ids[1]
    out = model(padded, attention_mask=mask)
    assert np.abs(out[0, 5:] - full[0, :15]).max() <= 1e-5
    prompt = ids[0, :4].tolist()
    import torch

    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert list(generate(model, prompt, 12, temperature=0.0))[:16] == ref[0].tolist()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"model_type": "mistral"}, "model_type"),
        ({"auto_map": {"AutoModel": "x.Y"}}, "auto_map"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_type"),
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"head_dim": 8}, "head_dim"),
        ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config"),
    ],
)
def test_refusals_name_the_key(change: dict[str, Any], key: str) -> None:
    hf = {
        "model_type": "llama",
        "vocab_size": 10,
        "max_position_embeddings": 8,
        "hidden_size": 12,
        "num_hidden_layers": 1,
        "num_attention_heads": 3,
        "intermediate_size": 8,
    } | change
    with pytest.raises(CheckpointError, match=key):
        config_from_hf(hf)


def test_sliding_window_judged_by_whether_it_is_on() -> None:
    qwen = {
        "model_type": "qwen2",
        "vocab_size": 10,
        "max_position_embeddings": 8,
        "hidden_size": 12,
        "num_hidden_layers": 1,
        "num_attention_heads": 3,
        "intermediate_size": 8,
        "sliding_window": 4096,
        "use_sliding_window": False,
    }
    assert config_from_hf(qwen)["qkv_bias"] is True  # Qwen2.5's keys: present, off
    with pytest.raises(CheckpointError, match="use_sliding_window=True"):
        config_from_hf(qwen | {"use_sliding_window": True})
    with pytest.raises(CheckpointError, match="layer_types"):
        config_from_hf(qwen | {"layer_types": ["sliding_attention"]})


# ----------------------------------------------------------------------------------------------
# A tiny quantised GGUF file, written as llama.cpp's converter writes one


def test_quantised_gguf_matches_transformers_reading_it(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    m = maker()
    hf = m.hf_model("llama", m.GGUF_LLAMA, seed=11)
    m.write_gguf(hf, tmp_path / "tiny.gguf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="tiny.gguf", dtype=torch.float32
    ).eval()
    model = Llama.from_pretrained(tmp_path / "tiny.gguf")
    assert model.config.n_kv_head == 2 and model.config.tie_word_embeddings
    # The same dequantized weights, q/k unpermuted (numpylm's stacked maps cut apart)
    params = weights.split(model.params, dataclasses.asdict(model.config))
    for name, t in ref.state_dict().items():
        if name == "lm_head.weight":
            continue
        np.testing.assert_array_equal(params[name.removeprefix("model.")], t.numpy())
    ids = np.random.default_rng(2).integers(0, 64, size=(2, 32))
    assert np.abs(model(ids) - hf_logits(ref, ids)).max() <= F32_TOL


def test_gguf_refusals(tmp_path: Path) -> None:
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 7)
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        Llama.from_pretrained(tmp_path / "bad.gguf")
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match=r"general\.architecture is 'gpt2'"):
        Llama.from_pretrained(tmp_path / "gpt2.gguf")


# ----------------------------------------------------------------------------------------------
# The committed fixtures (no torch needed): tests/fixtures/make_tiny_llama.py made them


@pytest.mark.parametrize(
    ("name", "model_file"),
    [("tiny-llama", ""), ("tiny-qwen2", ""), ("tiny-llama-gguf", "tiny.gguf")],
)
def test_fixture_logits_and_greedy(name: str, model_file: str) -> None:
    folder = FIXTURES / name
    model = Llama.from_pretrained(folder / model_file)
    ids, ref = (np.load(folder / f, allow_pickle=False) for f in ("inputs.npy", "logits.npy"))
    assert ref.shape == (*ids.shape, model.config.vocab_size) and np.abs(ref).max() > 1.0
    assert np.abs(model(ids) - ref).max() <= F32_TOL
    greedy = np.load(folder / "greedy.npy", allow_pickle=False)
    for use_cache in (True, False):
        out = generate(model, greedy[:4], len(greedy) - 4, temperature=0.0, use_cache=use_cache)
        np.testing.assert_array_equal(out, greedy)


def test_fixture_configs() -> None:
    llama = Llama.from_pretrained(FIXTURES / "tiny-llama").config
    qwen2 = Llama.from_pretrained(FIXTURES / "tiny-qwen2").config
    gguf = Llama.from_pretrained(FIXTURES / "tiny-llama-gguf" / "tiny.gguf").config
    assert (llama.n_head, llama.n_kv_head, llama.tie_word_embeddings) == (6, 2, True)
    assert (qwen2.qkv_bias, qwen2.tie_word_embeddings, qwen2.rope_theta) == (True, False, 1e6)
    assert (gguf.n_head, gguf.n_kv_head, gguf.tie_word_embeddings) == (4, 2, True)


# ----------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct, from the real file


@pytest.fixture(scope="module")
def smollm2(smollm2_model: Any, smollm2_hf: Any) -> Any:
    hf, tok = smollm2_hf
    messages = [{"role": "user", "content": "Who was the first president?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    return smollm2_model[0], hf, tok, np.array(ids)


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2: Any) -> None:
    model, hf, _, ids = smollm2
    eps = model.config.norm_eps  # 1e-5 as the file's float32 holds it
    assert abs(eps - 1e-5) < 1e-12 and model.config == LlamaConfig(norm_eps=eps)  # the defaults
    assert model.num_params() == sum(p.numel() for p in hf.parameters())
    logits, ref = model(ids), hf_logits(hf, ids[None])[0]
    assert np.abs(logits - ref).max() <= F32_TOL


@pytest.mark.slow
def test_smollm2_cache_decode_equals_the_full_recompute(smollm2: Any) -> None:
    """Prefill and 16 decode steps through the growing cache give the logits of one pass over
    the whole sequence (transformers' greedy answer is compared in test_llama_loading)."""
    model, _, _, ids = smollm2
    out = list(generate(model, ids, 16, temperature=0.0))
    full = model(np.array(out))
    cache = model.new_cache()
    steps = [model(ids, cache)] + [model(np.array([t]), cache) for t in out[len(ids) :]]
    assert np.abs(np.concatenate(steps)[: len(out)] - full).max() <= 1e-4


@pytest.mark.parametrize("keep", [0.001, 0.02, 0.4, 0.999])
def test_truncated_gguf_is_refused_clearly(tmp_path: Path, keep: float) -> None:
    data = (FIXTURES / "tiny-llama-gguf" / "tiny.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: max(8, int(len(data) * keep))])
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        Llama.from_pretrained(tmp_path / "cut.gguf")


def test_rope_is_a_complex_rotation_and_scores_see_only_offsets() -> None:
    """Independent of the code's formula: channel pair (i, i + D/2) as the complex number
    x_i + i x_{i+D/2}, multiplied by exp(i pos theta^(-2i/D)); and q.k after RoPE depends on
    the positions only through their difference."""
    from numpylm.layers import rope, rope_cos_sin

    rng = np.random.default_rng(0)
    D, theta = 8, 500.0
    x = rng.standard_normal((1, 2, 5, D))
    pos = np.array([0, 1, 7, 30, 31])
    got = rope(x, *rope_cos_sin(pos, D, theta, np.float64))
    z = (x[..., : D // 2] + 1j * x[..., D // 2 :]) * np.exp(
        1j * pos[:, None] * theta ** (-np.arange(D // 2) * 2 / D)
    )
    np.testing.assert_allclose(got, np.concatenate([z.real, z.imag], axis=-1), atol=1e-12)
    q, k = rng.standard_normal((2, 1, 1, 1, D))

    def score(m: int, n: int) -> float:
        rq = rope(q, *rope_cos_sin(np.array([m]), D, theta, np.float64))
        rk = rope(k, *rope_cos_sin(np.array([n]), D, theta, np.float64))
        return float((rq * rk).sum())

    assert score(9, 4) == pytest.approx(score(25, 20), abs=1e-12)
    assert score(9, 4) != pytest.approx(score(9, 5), abs=1e-3)


@pytest.mark.parametrize("backend", ["plain", "threads"])
def test_grouped_query_attention_is_attention_with_repeated_heads(backend: str) -> None:
    """Query head h reads key/value head h // G, as transformers' repeat_kv lays them out;
    with a per-sequence (padding) mask too, on both backends."""
    from numpylm.layers import attention, causal_mask, grouped_query_attention
    from numpylm.models.backends import get_backend

    rng = np.random.default_rng(3)
    B, H, H_kv, T, L, D = 2, 6, 2, 40, 45, 4
    q = rng.standard_normal((B, H, T, D))
    k, v = rng.standard_normal((2, B, H_kv, L, D))
    mask = causal_mask(T, L) & (rng.random((B, 1, 1, L)) > 0.2)  # (B, 1, T, L)
    mask[..., 0] = True
    for allowed in (causal_mask(T, L), mask):
        got = grouped_query_attention(get_backend(backend).attention, q, k, v, allowed)
        kr, vr = np.repeat(k, H // H_kv, axis=1), np.repeat(v, H // H_kv, axis=1)
        np.testing.assert_allclose(got, attention(q, kr, vr, allowed)[0], atol=1e-12)


@pytest.mark.parametrize(
    "fields",
    [{}, {"tie_word_embeddings": False}, {"qkv_bias": True, "n_kv_head": 9, "n_layer": 3}],
)
def test_the_parameter_count_is_the_table_summed(fields: dict[str, Any]) -> None:
    """``LlamaConfig.num_params`` (what the memory check reads before building anything) is
    the sum of ``param_shapes``, for tied and untied heads, with and without biases."""
    from numpylm.models.llama.model import param_shapes

    config = LlamaConfig(**fields)
    shapes = param_shapes(config)
    assert config.num_params() == sum(int(np.prod(s)) for s in shapes.values())
    assert config.num_tensors() == len(shapes)


def test_a_config_too_large_for_memory_is_refused_before_the_work(tmp_path: Path) -> None:
    """A config.json asking for a billion layers is refused in one line with the numbers, from
    the config alone: the n_layer-long table of parameters is never built."""
    import json
    import shutil
    import time

    folder = tmp_path / "huge"
    shutil.copytree(FIXTURES / "tiny-llama", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 10**9}))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"^loading a model of [\d,]+ parameters from .* needs"):
        Llama.from_pretrained(folder)
    assert time.perf_counter() - start < 5
    with pytest.raises(ValueError, match=r"^building a model of"):
        Llama(LlamaConfig(n_layer=10**9))
