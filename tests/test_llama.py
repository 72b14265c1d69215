"""The Llama family against Hugging Face ``transformers``: random checkpoints that transformers
writes (and reads back from numpylm), a tiny quantised GGUF file written here with llama.cpp's
``gguf`` package, and SmolLM2-135M-Instruct from its real GGUF file (skipped where absent)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from numpylm.checkpoint import CheckpointError
from numpylm.generation import generate
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.models.llama.weights import config_from_hf

F32_TOL = 1e-4
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def randomise(model: Any, seed: int) -> None:
    """Move every parameter away from its init: gains 1 + noise, everything else noise."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)


def hf_llama(**kw: Any) -> Any:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(**kw)
    model = transformers.LlamaForCausalLM(config).eval()
    randomise(model, 0)
    return model


def hf_qwen2(**kw: Any) -> Any:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw)).eval()
    randomise(model, 1)
    return model


LLAMA = dict(vocab_size=61, hidden_size=24, num_attention_heads=6, num_key_value_heads=2,
             intermediate_size=40, num_hidden_layers=2, max_position_embeddings=32,
             tie_word_embeddings=True, rms_norm_eps=1e-5)  # fmt: skip
QWEN2 = dict(vocab_size=53, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=48, num_hidden_layers=2, max_position_embeddings=32,
             tie_word_embeddings=False, rope_theta=1e6, rms_norm_eps=1e-6)  # fmt: skip


def hf_logits(model: Any, ids: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.numpy()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def hf_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    hf = hf_llama(**LLAMA) if request.param == "llama" else hf_qwen2(**QWEN2)
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
        assert np.abs(model.params["layers.1.self_attn.k_proj.bias"]).min() > 0
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


def write_gguf(hf: Any, path: Path, arch: str = "llama") -> None:
    """``hf``'s weights as a GGUF file: q/k rows permuted as llama.cpp's converter does for
    llama, the embedding and down maps Q8_0, the other maps Q4_1, the norms F32."""
    import gguf
    from gguf.quants import quantize

    c = hf.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    names = {
        "embed_tokens": "token_embd",
        "norm": "output_norm",
        "lm_head": "output",
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, t in hf.state_dict().items():
        a = t.numpy().astype(np.float32)
        name = name.removeprefix("model.")
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # llama.cpp writes a tied head once, as token_embd
        layer, rest = name.split(".", 2)[1:] if name.startswith("layers.") else (None, name)
        base, kind = rest.rsplit(".", 1)
        gname = names[base] + "." + kind
        if layer is not None:
            gname = f"blk.{layer}.{gname}"
        if arch == "llama" and base in ("self_attn.q_proj", "self_attn.k_proj"):
            heads = c.num_attention_heads if "q_proj" in base else c.num_key_value_heads
            a = a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2)
            a = a.reshape(t.shape)  # llama.cpp's permute()
        if a.ndim == 1:
            w.add_tensor(gname, a)
        else:
            q = gguf.GGMLQuantizationType.Q8_0 if base in ("embed_tokens", "mlp.down_proj") else (
                gguf.GGMLQuantizationType.Q4_1)  # fmt: skip
            w.add_tensor(gname, quantize(a, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_quantised_gguf_matches_transformers_reading_it(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    hf = hf_llama(vocab_size=64, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, num_hidden_layers=2, max_position_embeddings=32,
                  tie_word_embeddings=True, rms_norm_eps=1e-5)  # fmt: skip
    write_gguf(hf, tmp_path / "tiny.gguf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="tiny.gguf", dtype=torch.float32
    ).eval()
    model = Llama.from_pretrained(tmp_path / "tiny.gguf")
    assert model.config.n_kv_head == 2 and model.config.tie_word_embeddings
    for name, t in ref.state_dict().items():  # the same dequantized weights, q/k unpermuted
        if name == "lm_head.weight":
            continue
        np.testing.assert_array_equal(model.params[name.removeprefix("model.")], t.numpy())
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
# SmolLM2-135M-Instruct, from the real file


def smollm2_path() -> Path:
    from numpylm.download import cache_dir

    path = Path(os.environ.get("NUMPYLM_SMOLLM2", cache_dir() / SMOLLM2))
    if not path.is_file():
        pytest.skip(f"{path} is absent: run `numpylm download smollm2` or set NUMPYLM_SMOLLM2")
    return path


@pytest.fixture(scope="module")
def smollm2() -> Any:
    path = smollm2_path()
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    hf = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    messages = [{"role": "user", "content": "Who was the first president?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    return Llama.from_pretrained(path), hf, tok, np.array(ids)


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2: Any) -> None:
    model, hf, _, ids = smollm2
    eps = model.config.norm_eps  # 1e-5 as the file's float32 holds it
    assert abs(eps - 1e-5) < 1e-12 and model.config == LlamaConfig(norm_eps=eps)  # the defaults
    assert model.num_params() == sum(p.numel() for p in hf.parameters())
    logits, ref = model(ids), hf_logits(hf, ids[None])[0]
    assert np.abs(logits - ref).max() <= F32_TOL


@pytest.mark.slow
def test_smollm2_cache_and_greedy_answer_match_transformers(smollm2: Any) -> None:
    import torch

    model, hf, tok, ids = smollm2
    end = tok.convert_tokens_to_ids("<|im_end|>")
    ref = hf.generate(torch.tensor(ids[None]), max_new_tokens=40, do_sample=False,
                      eos_token_id=end)[0].tolist()  # fmt: skip
    out = list(generate(model, ids, 40, temperature=0.0, eos_id=end))
    assert out == ref, (tok.decode(out[len(ids) :]), tok.decode(ref[len(ids) :]))
    full = model(np.array(out))  # the cache's decode steps equal the full recompute
    cache = model.new_cache()
    steps = [model(ids, cache)] + [model(np.array([t]), cache) for t in out[len(ids) :]]
    assert np.abs(np.concatenate(steps)[: len(out)] - full).max() <= 1e-4
