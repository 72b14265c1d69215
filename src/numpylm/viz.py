"""Pictures of what the model does: where it looks, what it would say next, how it learned.

- ``plot_attention``: the attention map of one layer (one head, the mean of all heads, or every
  head side by side), the tokens of the text on both axes. A row is one token; its colours show
  which earlier tokens it reads from, and the future, hidden by the causal mask, is hatched.
- ``plot_next_token``: the most likely next tokens after a prompt as bars, and beside them the
  same tokens after temperature, top-k and top-p have reshaped the distribution.
- ``plot_loss``: the training and validation loss of a run directory, step by step.

Each function returns a ``matplotlib.figure.Figure``; ``save="picture.png"`` also writes it to a
file (or call ``fig.savefig`` yourself). matplotlib is an optional dependency
(``pip install "numpylm[plot]"``) and is imported only when a picture is drawn. The figures are
drawn with matplotlib's Agg renderer, without pyplot, so they work on a machine without a
display, and a notebook shows them as images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import checks, sampling
from .io import checkpoint
from .models.gpt2.model import GPT
from .sampling.temperature import check_temperature
from .sampling.top_k import check_top_k
from .sampling.top_p import check_top_p
from .tokens.tokenizer import Tokenizer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SavePath = str | os.PathLike[str] | None


def _new_figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg renderer, not registered with pyplot (so nothing piles up in
    pyplot's list of open figures, and no display is needed)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "numpylm.viz draws with matplotlib, which is not installed: "
            'pip install "numpylm[plot]" (or pip install matplotlib)'
        ) from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def _finish(fig: Figure, save: SavePath) -> Figure:
    if save is not None:
        fig.savefig(save, dpi=100)
    return fig


def _label(token: str) -> str:
    """Text as an axis label: spaces and line breaks made visible, other control characters
    escaped (no font has a picture for them)."""
    shown = token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in shown)


def _token_label(tokenizer: Tokenizer, token_id: int) -> str:
    """One token (``Tokenizer.token_text``) as an axis label."""
    return _label(tokenizer.token_text(token_id))


# --------------------------------------------------------------------------------------------
# Attention


def plot_attention(
    model: GPT,
    tokenizer: Tokenizer,
    text: str,
    layer: int = 0,
    head: int | str | None = None,
    *,
    save: SavePath = None,
) -> Figure:
    """A heatmap of where each token of ``text`` attends, in one layer.

    Args:
        model: the language model.
        tokenizer: its tokenizer; ``text`` is cut into T tokens (1 <= T <= n_ctx).
        text: the text to read.
        layer: which transformer block, 0 to ``n_layer - 1``.
        head: which attention head, 0 to ``n_head - 1``; None shows the mean over all heads;
            ``"all"`` draws one panel per head, side by side, on one colour scale.
        save: a file to write the picture to (PNG, SVG, ... by its extension).

    Returns:
        The figure: a (T, T) grid per panel, row ``t`` the token that reads, column ``s`` the
        token read, colour the attention probability (``GPT.attention_maps``; each row sums
        to 1). Above the diagonal is the future, which the causal mask hides: those cells are
        not data (NaN in the image) and are drawn hatched, never as a colour. The colour scale
        runs from 0 to the largest probability in rows 1 to T - 1. Row 0 is left out of the
        scale because the first token can read only itself, so its one cell is always 1.0; that
        cell is drawn in the top colour, and the colour bar's arrow marks such clipped values.
    """
    c = model.config
    layer = checks.index("layer", layer, c.n_layer, "layers")
    if isinstance(head, str):
        if head != "all":
            raise ValueError(f'head must be an int, None (the mean) or "all", got {head!r}')
    elif head is not None:
        head = checks.index("head", head, c.n_head, "heads per layer")
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError("text is empty: give at least one token of text to attend over")
    att = model.attention_maps(np.asarray(ids))[layer]  # (H, T, T)
    if head == "all":
        grids, titles = list(att), [f"head {h}" for h in range(c.n_head)]  # H x (T, T)
    elif head is None:
        grids, titles = [att.mean(axis=0)], [f"mean of {c.n_head} heads"]
    else:
        grids, titles = [att[head]], [f"head {head}"]
    labels = [_token_label(tokenizer, i) for i in ids]

    T = len(ids)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)  # (T, T): masked, never attended
    shown = [np.where(future, np.nan, g) for g in grids]  # NaN: not a probability at all
    vmax = max(float(g[1:].max()) if T > 1 else 1.0 for g in grids)  # rows after the first

    n = len(grids)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    side = min(12.0, 2.5 + 0.35 * T) if n == 1 else min(5.0, 1.8 + 0.25 * T)
    fig = _new_figure(cols * side + 1.2, rows * side)
    from matplotlib import colormaps  # after _new_figure, which says how to install matplotlib
    from matplotlib.patches import Rectangle

    # NaN cells (the future) are transparent, so the hatching behind them shows through.
    cmap = colormaps["viridis"].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    axes = fig.subplots(rows, cols, squeeze=False)
    images = []
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_axis_off()  # an empty place in the last row of the grid
            continue
        # A hatched background, seen only through the masked (transparent) cells.
        ax.add_patch(
            Rectangle((-0.5, -0.5), T, T, facecolor="white", edgecolor="0.7", hatch="///", zorder=0)
        )
        images.append(ax.imshow(shown[k], cmap=cmap, vmin=0.0, vmax=vmax, zorder=1))
        ax.set_xticks(range(T), labels if k + cols >= n else [])  # no panel below: label it
        ax.set_yticks(range(T), labels if k % cols == 0 else [])
        ax.tick_params(axis="x", labelrotation=90, labelsize=8 if n > 1 else 9)
        ax.tick_params(axis="y", labelsize=8 if n > 1 else 9)
        ax.set_title(titles[k], fontsize=10)
    corner = axes[rows - 1, 0]
    corner.set_xlabel("attends to (key)")
    corner.set_ylabel("token (query)")
    fig.suptitle(f"attention, layer {layer} (hatched: the future, masked)", fontsize=11)
    clipped = any(float(np.nanmax(g)) > vmax for g in shown)
    fig.colorbar(
        images[0],  # one scale for every panel
        ax=axes.ravel().tolist(),
        shrink=0.8,
        label="probability",
        extend="max" if clipped else "neither",
    )
    return _finish(fig, save)


# --------------------------------------------------------------------------------------------
# The next token


def plot_next_token(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    top_n: int = 10,
    temperature: float | None = 0.7,
    top_k: int | None = 3,
    top_p: float | None = 0.8,
    *,
    save: SavePath = None,
) -> Figure:
    """Bar charts of the next-token distribution after ``prompt``, before and after sampling.

    The first panel is the model's own distribution (its softmax): the ``top_n`` most likely
    next tokens and their probabilities. Each further panel shows the same tokens after one
    sampler reshaped the distribution (``numpylm.sampling``): ``temperature`` (below 1 it
    sharpens, above 1 it flattens), ``top_k`` (only the k best survive) and ``top_p`` (only the
    most likely tokens holding probability p survive). Removed tokens are marked "cut". Pass
    None to leave a panel out.

    Args:
        model: the language model.
        tokenizer: its tokenizer.
        prompt: the text to continue (at least one token, at most n_ctx).
        top_n: how many tokens to show, >= 1.
        temperature: the temperature of the second panel, >= 0 (0 is greedy).
        top_k: the k of the top-k panel, >= 1.
        top_p: the p of the top-p panel, in (0, 1].
        save: a file to write the picture to.

    Returns:
        The figure, one panel per distribution, the tokens in the same order in each.
    """
    top_n = checks.whole_number("top_n", top_n, 1)
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("prompt is empty: give at least one token of text to continue")
    if len(ids) > model.config.n_ctx:
        ids = ids[-model.config.n_ctx :]  # the model reads the last n_ctx tokens, as generate does
    logits = model(np.asarray(ids), last_only=True)[-1]  # (V,)
    if tokenizer.n_vocab < logits.shape[-1]:
        logits[tokenizer.n_vocab :] = -np.inf  # padding rows of the vocabulary are never drawn

    panels: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [("the model", lambda z: z)]
    if temperature is not None:
        t = check_temperature(temperature)
        panels.append((f"temperature = {t:g}", lambda z: sampling.temperature(z, t)))
    if top_k is not None:
        k = check_top_k(top_k)
        panels.append((f"top-k, k = {k}", lambda z: sampling.top_k(z, k)))
    if top_p is not None:
        p = check_top_p(top_p)
        panels.append((f"top-p, p = {p:g}", lambda z: sampling.top_p(z, p)))

    base = sampling.softmax(logits)  # (V,)
    shown = np.argsort(-base, kind="stable")[:top_n]  # (n,) most likely first
    labels = [_token_label(tokenizer, int(i)) for i in shown]
    n = len(shown)
    fig = _new_figure(3.2 * len(panels) + 1.0, 1.2 + 0.35 * n)
    axes = fig.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    rows = np.arange(n)
    top = 0.0
    for ax, (title, reshape) in zip(axes, panels, strict=True):
        probs = sampling.softmax(reshape(logits))[shown]  # (n,)
        kept = probs > 0
        top = max(top, float(probs.max()))
        ax.barh(rows, probs, color=np.where(kept, "tab:blue", "lightgrey"))
        for r, prob, alive in zip(rows, probs, kept, strict=True):
            ax.text(prob, r, f" {prob:.1%}" if alive else " cut", va="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("probability")
    axes[0].set_xlim(0, 1.18 * top + 0.02)  # shared: room for the labels of the longest bar
    axes[0].set_yticks(rows, labels, fontsize=9)
    axes[0].invert_yaxis()  # shared: the most likely token on top in every panel
    fig.suptitle(f"next token after {_label(prompt[-40:])!r}", fontsize=10)
    return _finish(fig, save)


# --------------------------------------------------------------------------------------------
# Training


def plot_loss(run_dir: str | os.PathLike[str], *, save: SavePath = None) -> Figure:
    """The loss curves of a training or fine-tuning run.

    Args:
        run_dir: a run directory written by ``numpylm train`` or ``numpylm finetune`` (it holds
            ``trainer_state.json``, with the loss of every step and the evaluations).
        save: a file to write the picture to.

    Returns:
        The figure: the training loss of every step (faint), its moving average, and the
        validation loss at each evaluation (dots), against the step.
    """
    path = Path(run_dir) / "trainer_state.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: plot_loss needs the directory of a training run "
            "(the --out of numpylm train or numpylm finetune)"
        )
    state = checkpoint.read_json(path)
    losses = np.asarray(state.get("losses", []), dtype=np.float64)  # losses[i]: step i + 1
    history: Sequence[dict[str, Any]] = state.get("history", [])
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if losses.size == 0 and not val:
        raise ValueError(f"{path} records no losses yet: train for at least one step")

    fig = _new_figure(7.0, 4.0)
    ax = fig.add_subplot()
    if losses.size:
        steps = np.arange(1, losses.size + 1)
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
        w = max(1, losses.size // 50)  # average over ~2% of the run: the trend, not the noise
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1 :], smooth, color="tab:blue", label="training loss")
    if val:
        v_steps, v_loss = zip(*val, strict=True)
        ax.plot(v_steps, v_loss, "o-", color="tab:orange", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(f"loss, {Path(run_dir).resolve().name}")
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, save)
