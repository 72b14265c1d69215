"""Pictures: the attention maps behind them, and each plot rendered to a PNG and looked at."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from numpylm import GPT, GPTConfig, Tokenizer, train_bpe
from numpylm.layers import layer_norm
from numpylm.training.train import TRAINER_STATE, TrainConfig, train

pytest.importorskip("matplotlib")
from matplotlib.image import imread

from numpylm import viz

TEXT = "the bank of the river, and money in the bank.\n" * 40
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_bpe(TEXT, 280)


@pytest.fixture(scope="module")
def model(tokenizer: Tokenizer) -> GPT:
    config = GPTConfig(vocab_size=tokenizer.n_vocab, n_ctx=32, n_layer=2, n_head=4, n_embd=32)
    return GPT(config, seed=1)


def read_png(path: Path) -> np.ndarray:
    """The picture in ``path`` as (height, width, channels) floats, after checking it is a
    PNG file with something drawn on it."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.var() > 0  # not a blank canvas
    return pixels


# --------------------------------------------------------------------------------------------
# Attention maps


def test_attention_maps_leave_the_logits_unchanged(model: GPT) -> None:
    ids = np.array([[5, 17, 260, 3, 99, 41], [7, 7, 2, 270, 11, 0]])  # (B=2, T=6)
    before = model(ids)
    maps = model.attention_maps(ids)
    after = model(ids)
    np.testing.assert_array_equal(before, after)
    assert len(maps) == model.config.n_layer
    for m in maps:
        assert m.shape == (2, 4, 6, 6) and m.dtype == np.float32
        np.testing.assert_allclose(m.sum(axis=-1), 1.0, rtol=1e-5)
        assert np.all(np.triu(m, k=1) == 0)  # no token sees a later one
        assert np.all(m >= 0)
    # One sequence alone gets the same map as in the batch; 1-D ids drop the batch axis.
    alone = model.attention_maps(ids[1])
    assert alone[0].shape == (4, 6, 6)
    np.testing.assert_allclose(alone[1], maps[1][1], rtol=1e-5, atol=1e-7)


def test_attention_maps_layer_0_by_hand(model: GPT) -> None:
    """Layer 0's map recomputed from the weights: softmax(q k^T / sqrt(D)) under the mask."""
    ids = np.array([3, 250, 12, 12, 271, 8, 90])
    p, T, H, D = model.params, len(ids), model.config.n_head, model.config.head_size
    x = p["wte.weight"][ids] + p["wpe.weight"][:T]  # (T, C)
    a = layer_norm(x, p["h.0.ln_1.weight"], p["h.0.ln_1.bias"]).astype(np.float64)
    qkv = a @ p["h.0.attn.c_attn.weight"] + p["h.0.attn.c_attn.bias"]  # (T, 3C)
    q, k, _ = np.split(qkv, 3, axis=-1)
    expected = np.empty((H, T, T))
    for h in range(H):
        cols = slice(h * D, (h + 1) * D)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(D)  # (T, T)
        scores[np.triu_indices(T, k=1)] = -np.inf
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        expected[h] = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.attention_maps(ids)[0], expected, rtol=1e-4, atol=1e-6)


def test_attention_maps_match_transformers(model: GPT, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager")
    ids = np.array([[4, 200, 31, 9, 9, 265, 1, 77]])
    with torch.no_grad():
        out = hf(torch.from_numpy(ids), output_attentions=True)
    for ours, theirs in zip(model.attention_maps(ids), out.attentions, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-6)


def test_attention_maps_too_long(model: GPT) -> None:
    with pytest.raises(ValueError, match="n_ctx=32"):
        model.attention_maps(np.zeros(33, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# The plots, rendered


def test_plot_attention_png(model: GPT, tokenizer: Tokenizer, tmp_path: Path) -> None:
    text = "money in the bank"
    ids = tokenizer.encode(text)
    n = len(ids)
    fig = viz.plot_attention(model, tokenizer, text, layer=1, save=tmp_path / "mean.png")
    pixels = read_png(tmp_path / "mean.png")
    width, height = fig.get_size_inches() * 100
    assert pixels.shape[:2] == (round(height), round(width))
    # The picture is the mean over heads of the model's map, with the tokens as tick labels.
    ax = fig.axes[0]
    image = ax.images[0]
    data = np.asarray(image.get_array().filled(np.nan))  # a masked array: NaN cells masked
    expected = model.attention_maps(ids)[1].mean(0)  # (T, T)
    below = np.tril(np.ones((n, n), dtype=bool))
    np.testing.assert_allclose(data[below], expected[below], rtol=1e-6)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == n and labels[-1] == "␣bank"
    # One head is a different picture.
    viz.plot_attention(model, tokenizer, text, layer=1, head=2, save=tmp_path / "head.png")
    assert not np.array_equal(read_png(tmp_path / "head.png"), pixels)


def test_plot_attention_masked_cells_look_masked(model: GPT, tokenizer: Tokenizer) -> None:
    """The future is not zero attention: its cells are NaN, drawn transparent over a hatched
    background, so no colour of the scale (zero included) stands for them."""
    text = "money in the bank"
    n = len(tokenizer.encode(text))
    fig = viz.plot_attention(model, tokenizer, text, layer=0)
    ax = fig.axes[0]
    image = ax.images[0]
    data = np.asarray(image.get_array().filled(np.nan))
    future = np.triu(np.ones((n, n), dtype=bool), k=1)
    assert np.isnan(data[future]).all() and not np.isnan(data[~future]).any()
    assert image.get_cmap().get_bad()[3] == 0  # the colour of NaN: fully transparent
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].zorder < image.zorder  # seen only through NaN


def test_plot_attention_colour_scale_skips_row_0(model: GPT, tokenizer: Tokenizer) -> None:
    """Row 0 is always one cell of 1.0 (the first token reads only itself); the scale is set
    by the other rows, so the rest of the map keeps its contrast, and the bar says it clips."""
    text = "money in the bank"
    maps = model.attention_maps(tokenizer.encode(text))[1]  # (H, T, T)
    fig = viz.plot_attention(model, tokenizer, text, layer=1, head=3)
    norm = fig.axes[0].images[0].norm
    assert norm.vmin == 0.0
    np.testing.assert_allclose(norm.vmax, maps[3, 1:].max(), rtol=1e-6)
    assert maps[3, 0, 0] == pytest.approx(1.0) and norm.vmax < 1.0
    colorbar = fig.axes[-1]
    assert colorbar.get_ylabel() == "probability"
    assert fig.axes[0].images[0].colorbar.extend == "max"


def test_plot_attention_every_head(model: GPT, tokenizer: Tokenizer, tmp_path: Path) -> None:
    text = "the bank of the river"
    maps = model.attention_maps(tokenizer.encode(text))[1]  # (H, T, T)
    fig = viz.plot_attention(model, tokenizer, text, layer=1, head="all", save=tmp_path / "a.png")
    read_png(tmp_path / "a.png")
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == [f"head {h}" for h in range(4)]
    below = np.tril(np.ones(maps.shape[1:], dtype=bool))
    for h, ax in enumerate(panels):
        data = np.asarray(ax.images[0].get_array().filled(np.nan))
        np.testing.assert_allclose(data[below], maps[h][below], rtol=1e-6)
    # One colour scale for all the panels, set by rows 1 to T - 1 of every head.
    vmax = [ax.images[0].norm.vmax for ax in panels]
    np.testing.assert_allclose(vmax, [maps[:, 1:].max()] * 4, rtol=1e-6)


def test_plot_next_token_png(model: GPT, tokenizer: Tokenizer, tmp_path: Path) -> None:
    prompt = "money in the"
    fig = viz.plot_next_token(
        model,
        tokenizer,
        prompt,
        top_n=6,
        temperature=0.5,
        top_k=2,
        top_p=0.3,
        save=tmp_path / "n.png",
    )
    read_png(tmp_path / "n.png")
    assert [ax.get_title() for ax in fig.axes] == [
        "the model",
        "temperature = 0.5",
        "top-k, k = 2",
        "top-p, p = 0.3",
    ]
    # Independent of numpylm's samplers: the model's logits in float64, reshaped by hand.
    z = model(np.array(tokenizer.encode(prompt)))[-1].astype(np.float64)

    def probs(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max())
        return e / e.sum()

    order = np.argsort(-z, kind="stable")
    p = probs(z)
    cut_k = np.full_like(z, -np.inf)
    cut_k[order[:2]] = z[order[:2]]
    n_nucleus = int(np.searchsorted(np.cumsum(p[order]), 0.3) + 1)
    cut_p = np.full_like(z, -np.inf)
    cut_p[order[:n_nucleus]] = z[order[:n_nucleus]]
    for ax, expected in zip(fig.axes, [p, probs(z / 0.5), probs(cut_k), probs(cut_p)], strict=True):
        widths = np.array([bar.get_width() for bar in ax.patches])
        np.testing.assert_allclose(widths, expected[order[:6]], rtol=1e-4, atol=1e-7)
    assert sum(bar.get_width() > 0 for bar in fig.axes[2].patches) == 2
    # Leaving the samplers out leaves one panel.
    assert len(viz.plot_next_token(model, tokenizer, prompt, 6, None, None, None).axes) == 1


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data") / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(
        data=str(data),
        out=str(out),
        tokenizer="bpe:270",
        config="tiny",
        n_embd=16,
        n_ctx=16,
        steps=8,
        batch_size=2,
        warmup=1,
        eval_every=4,
        eval_batches=1,
    )
    train(cfg, progress=False)
    return out


def test_plot_loss_png(run_dir: Path, tmp_path: Path) -> None:
    fig = viz.plot_loss(run_dir, save=tmp_path / "loss.png")
    read_png(tmp_path / "loss.png")
    state = json.loads((run_dir / TRAINER_STATE).read_text())
    raw, _smooth, val = fig.axes[0].lines
    np.testing.assert_array_equal(raw.get_xdata(), np.arange(1, 9))
    np.testing.assert_allclose(raw.get_ydata(), state["losses"])
    assert list(val.get_xdata()) == [0, 4, 8]
    np.testing.assert_allclose(val.get_ydata(), [h["val_loss"] for h in state["history"]])


# --------------------------------------------------------------------------------------------
# Errors


def test_bad_arguments(model: GPT, tokenizer: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"layer must be in 0 to 1 \(the model has 2 layers\)"):
        viz.plot_attention(model, tokenizer, "bank", layer=2)
    with pytest.raises(ValueError, match="head must be in 0 to 3"):
        viz.plot_attention(model, tokenizer, "bank", head=-1)
    with pytest.raises(ValueError, match='head must be an int, None \\(the mean\\) or "all"'):
        viz.plot_attention(model, tokenizer, "bank", head="mean")
    with pytest.raises(TypeError, match="layer must be an int"):
        viz.plot_attention(model, tokenizer, "bank", layer=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text is empty"):
        viz.plot_attention(model, tokenizer, "")
    with pytest.raises(ValueError, match="top_p"):
        viz.plot_next_token(model, tokenizer, "bank", top_p=1.5)
    with pytest.raises(ValueError, match="top_n must be a whole number >= 1"):
        viz.plot_next_token(model, tokenizer, "bank", top_n=0)
    with pytest.raises(FileNotFoundError, match=r"trainer_state\.json does not exist"):
        viz.plot_loss(tmp_path)


def test_without_matplotlib(
    model: GPT, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import` of it fail
    with pytest.raises(ImportError, match=r'pip install "numpylm\[plot\]"'):
        viz.plot_attention(model, tokenizer, "bank")
