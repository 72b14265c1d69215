"""numpylm computes what Hugging Face ``transformers`` computes, for the same GPT-2 files.

Two kinds of test: the first builds random models with ``transformers`` in the test (skipped
where torch is absent); the second reads ``tests/fixtures/tiny-gpt2``, a checkpoint that
``transformers`` wrote with reference outputs from PyTorch, and runs without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from numpylm import GPT, GPTConfig
from numpylm.generation import generate
from numpylm.models.gpt2.model import param_shapes

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-gpt2"
F32_TOL = 1e-4
F64_TOL = 1e-10


def load_npy(name: str) -> np.ndarray:
    return np.load(FIXTURE / name, allow_pickle=False)


# ----------------------------------------------------------------------------------------------
# Against transformers, live


def hf_model(seed: int = 0) -> Any:
    """A random ``GPT2LMHeadModel`` with odd sizes (4 layers, 5 heads of 8 channels, vocabulary
    157, context 48). Every parameter is random: biases not 0, LayerNorm gains not 1."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=157,
        n_positions=48,
        n_layer=4,
        n_head=5,
        n_embd=40,
        bos_token_id=156,
        eos_token_id=156,
    )
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            is_gain = name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
            p.copy_(1.0 + noise if is_gain else noise)
    return model


def hf_logits(model: Any, ids: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.numpy()


def hf_greedy(model: Any, prompt: list[int], n: int) -> list[int]:
    """Argmax continuation by transformers, recomputing the whole sequence at each step. Fails
    if two top logits are within 1e-3 (a near tie that rounding alone could flip)."""
    ids = list(prompt)
    for _ in range(n):
        last = hf_logits(model, np.array([ids]))[0, -1]
        top2 = np.sort(last)[-2:]
        assert top2[1] - top2[0] > 1e-3, "near tie in the reference: choose another seed"
        ids.append(int(np.argmax(last)))
    return ids


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    model = hf_model()
    out = tmp_path_factory.mktemp("hf-gpt2")
    model.save_pretrained(out)
    return model, out


def test_from_pretrained_matches_transformers_logits_float32(hf_dir: tuple[Any, Path]) -> None:
    hf, path = hf_dir
    model = GPT.from_pretrained(path)
    assert model.config == GPTConfig(vocab_size=157, n_ctx=48, n_layer=4, n_head=5, n_embd=40)
    ids = np.random.default_rng(0).integers(0, 157, size=(3, 48))
    logits = model(ids)
    assert logits.dtype == np.float32
    ref = hf_logits(hf, ids)
    assert np.abs(ref).max() > 1.0  # the logits are not all near zero
    assert np.abs(logits - ref).max() <= F32_TOL


def test_from_pretrained_float64_matches_transformers_float64(hf_dir: tuple[Any, Path]) -> None:
    hf, path = hf_dir
    model = GPT.from_pretrained(path, dtype=np.float64)
    ids = np.random.default_rng(1).integers(0, 157, size=(2, 31))
    logits = model(ids)
    assert logits.dtype == np.float64
    ref = hf_logits(hf.double(), ids)
    hf.float()
    assert np.abs(logits - ref).max() <= F64_TOL


def test_greedy_continuation_matches_transformers(hf_dir: tuple[Any, Path]) -> None:
    hf, path = hf_dir
    model = GPT.from_pretrained(path)
    prompt = [3, 141, 59, 26, 100, 7]
    expected = hf_greedy(hf, prompt, 20)
    assert list(generate(model, prompt, 20, temperature=0.0)) == expected
    assert list(generate(model, prompt, 20, temperature=0.0, use_cache=False)) == expected


def test_save_pretrained_loads_in_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    config = GPTConfig(vocab_size=211, n_ctx=40, n_layer=3, n_head=3, n_embd=36)
    rng = np.random.default_rng(7)
    params = {
        name: rng.standard_normal(p.shape, dtype=np.float32) * 0.2
        for name, p in GPT(config).params.items()
    }
    model = GPT(config, params=params)
    model.save_pretrained(tmp_path)

    hf, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    hf.eval()
    wte = hf.transformer.wte.weight
    assert hf.lm_head.weight.data_ptr() == wte.data_ptr()  # tied, as GPT-2's head is
    np.testing.assert_array_equal(wte.detach().numpy(), params["wte.weight"])

    ids = rng.integers(0, 211, size=(2, 40))
    ref = hf_logits(hf, ids)
    assert np.abs(ref).max() > 1.0
    assert np.abs(model(ids) - ref).max() <= F32_TOL


@pytest.mark.parametrize("prefix", ["transformer.", ""])
def test_both_key_spellings_buffers_and_lm_head(
    hf_dir: tuple[Any, Path], tmp_path: Path, prefix: str
) -> None:
    """Checkpoints in the wild spell keys with or without ``transformer.``, may carry the
    ``attn.bias``/``attn.masked_bias`` mask buffers, and may store ``lm_head.weight``."""
    from safetensors.numpy import load_file, save_file

    hf, path = hf_dir
    tensors = load_file(path / "model.safetensors")
    n_ctx = hf.config.n_positions
    renamed = {prefix + k.removeprefix("transformer."): v for k, v in tensors.items()}
    for i in range(hf.config.n_layer):
        tril = np.tril(np.ones((n_ctx, n_ctx), dtype=bool))[None, None]  # (1, 1, n_ctx, n_ctx)
        renamed[f"{prefix}h.{i}.attn.bias"] = tril.astype(np.float32)
        renamed[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    renamed["lm_head.weight"] = tensors["transformer.wte.weight"].copy()
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((path / "config.json").read_text())

    model = GPT.from_pretrained(tmp_path)
    assert set(model.params) == set(param_shapes(model.config))  # no buffers, no lm_head
    ids = np.random.default_rng(2).integers(0, 157, size=(2, 20))
    assert np.abs(model(ids) - hf_logits(hf, ids)).max() <= F32_TOL


def test_lm_head_alone_is_tied_to_wte(hf_dir: tuple[Any, Path], tmp_path: Path) -> None:
    """A checkpoint that stores the shared matrix only as ``lm_head.weight`` still loads."""
    from safetensors.numpy import load_file, save_file

    hf, path = hf_dir
    tensors = load_file(path / "model.safetensors")
    tensors["lm_head.weight"] = tensors.pop("transformer.wte.weight")
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((path / "config.json").read_text())

    model = GPT.from_pretrained(tmp_path)
    np.testing.assert_array_equal(model.params["wte.weight"], tensors["lm_head.weight"])
    ids = np.random.default_rng(3).integers(0, 157, size=(1, 16))
    assert np.abs(model(ids) - hf_logits(hf, ids)).max() <= F32_TOL


# ----------------------------------------------------------------------------------------------
# Against the committed fixture (no torch needed)


def test_fixture_logits_float32() -> None:
    model = GPT.from_pretrained(FIXTURE)
    ids, ref = load_npy("inputs.npy"), load_npy("logits.npy")
    assert ref.shape == (*ids.shape, model.config.vocab_size)
    logits = model(ids)
    assert logits.dtype == np.float32
    assert np.abs(logits - ref).max() <= F32_TOL


def test_fixture_logits_float64() -> None:
    model = GPT.from_pretrained(FIXTURE, dtype=np.float64)
    ids, ref = load_npy("inputs.npy"), load_npy("logits_float64.npy")
    assert np.abs(model(ids) - ref).max() <= F64_TOL


@pytest.mark.parametrize("use_cache", [True, False])
def test_fixture_greedy_continuation(use_cache: bool) -> None:
    model = GPT.from_pretrained(FIXTURE)
    expected = load_npy("greedy.npy")
    prompt = expected[:5]
    n = len(expected) - len(prompt)
    out = generate(model, prompt, n, temperature=0.0, use_cache=use_cache)
    np.testing.assert_array_equal(out, expected)


def test_fixture_references_are_what_transformers_computes() -> None:
    """Guards the fixture itself: its stored outputs come from its own files."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    hf = transformers.GPT2LMHeadModel.from_pretrained(FIXTURE).eval()
    ids = load_npy("inputs.npy")
    assert np.abs(hf_logits(hf, ids) - load_npy("logits.npy")).max() <= 1e-5
    greedy = load_npy("greedy.npy")
    assert hf_greedy(hf, greedy[:5].tolist(), len(greedy) - 5) == greedy.tolist()
