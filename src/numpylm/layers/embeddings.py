"""How tokens and their positions enter the model.

Each id becomes a learned vector. GPT-2 adds a learned vector per position (``wpe``); the
Llama family adds none, and instead turns each query and key by an angle that grows with its
position (rotary position embeddings, RoPE: ``rope``), inside attention.
"""

from __future__ import annotations

import numpy as np


def embedding(wte: np.ndarray, wpe: np.ndarray, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``wte[ids] + wpe[pos]``: token embedding plus position embedding.

    Args:
        wte: (V, C) token embedding table.
        wpe: (n_ctx, C) learned position embedding table.
        ids: (B, T) integer token ids.
        pos: (B, T) or (T,) integer positions.

    Returns:
        (B, T, C) array.
    """
    return wte[ids] + wpe[pos]  # (B, T, C)


def embedding_backward(
    dout: np.ndarray, ids: np.ndarray, pos: np.ndarray, dwte: np.ndarray, dwpe: np.ndarray
) -> None:
    """Backward of ``embedding``: send each position's gradient back to the rows it read.

    Args:
        dout: (B, T, C) gradient of the loss with respect to the embedding's output.
        ids: (B, T) the token ids of the forward pass.
        pos: (B, T) or (T,) the positions of the forward pass.
        dwte: (V, C) gradient of ``wte``, added to in place (the tied LM head's share may
            already be in it).
        dwpe: (n_ctx, C) gradient of ``wpe``, added to in place.

    A token that occurs several times gets the sum of all its gradients. ``dwte[ids] += dout``
    would be wrong: with repeated ids NumPy writes each row once and drops the rest.
    ``np.add.at`` accumulates every occurrence.
    """
    np.add.at(dwte, ids, dout)  # from "wte[ids]"
    # from "wpe[pos]": with one row of positions shared by the batch, sum over the batch first
    np.add.at(dwpe, pos, dout.sum(axis=0) if pos.ndim == 1 else dout)


def rope_cos_sin(
    pos: np.ndarray, head_size: int, theta: float, dtype: np.dtype | type
) -> tuple[np.ndarray, np.ndarray]:
    """``cos(pos * f_i)`` and ``sin(pos * f_i)`` with ``f_i = theta ** (-2i / D)``,
    ``i = 0 .. D/2 - 1``: the angles by which RoPE turns each pair of channels.

    Pair ``i`` turns by ``f_i`` radians per position: the first pairs quickly (``f_0 = 1``), the
    last slowly (``theta`` sets how slowly: 10,000 in the first Llama, 1e5 or 1e6 in models that
    read longer texts).

    Args:
        pos: (T,) positions shared by the batch, or (B, T) per sequence (a padded batch).
        head_size: ``D``, the channels of one head (even).
        theta: the RoPE base (``rope_theta``).
        dtype: the model's dtype, which the tables are returned in.

    Returns:
        ``(cos, sin)``, each (T, D/2), or (B, 1, T, D/2) for (B, T) positions: shaped to
        broadcast against (B, H, T, D/2) halves of the queries and keys.
    """
    # The angles reach thousands of radians in a long context; float32 would keep only about
    # 1e-4 rad of them, so they are computed in float64 and the tables rounded once, at the end.
    freq = theta ** (-np.arange(0, head_size, 2, dtype=np.float64) / head_size)  # (D/2,)
    angle = np.asarray(pos, dtype=np.float64)[..., None] * freq  # (..., T, D/2)
    if angle.ndim == 3:
        angle = angle[:, None]  # (B, 1, T, D/2): the same angles for every head
    return np.cos(angle).astype(dtype), np.sin(angle).astype(dtype)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """``[x1 * cos - x2 * sin, x2 * cos + x1 * sin]`` with ``x1, x2`` the two halves of each
    head's channels: rotary position embedding, each pair ``(x1[i], x2[i])`` turned by the
    angle ``pos * f_i`` (``rope_cos_sin``).

    Applied to the queries and keys (not the values), it makes the score ``q . k`` of a query at
    position ``m`` and a key at ``n`` depend on their positions only through ``m - n``: turning
    both by their own angles leaves the angle between them. Pairing channel ``i`` with channel
    ``i + D/2`` (rather than ``2i`` with ``2i + 1``) is Hugging Face's layout, which numpylm
    uses for every file (``models.llama.weights`` converts llama.cpp's).

    Args:
        x: (B, H, T, D) queries or keys.
        cos, sin: (T, D/2) or (B, 1, T, D/2) tables from ``rope_cos_sin``.

    Returns:
        (B, H, T, D), rotated.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # 2 x (B, H, T, D/2): views (np.split costs twice)
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
