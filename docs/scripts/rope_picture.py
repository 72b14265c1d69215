"""Draw docs/images/rope.png, RoPE's rotations, for docs/guide/gpt2-to-llama.md.

    PYTHONPATH=src python docs/scripts/rope_picture.py

Everything drawn comes from ``numpylm.layers``: ``rope_data`` computes the arrays with
``rope_cos_sin`` and ``rope`` and returns them, ``figure`` plots exactly those arrays, and
tests/test_gpt2_to_llama.py checks both against ``cos(pos * theta ** (-2i / D))`` computed on
its own. The shape is SmolLM2-135M's: head size D = 64 (32 channel pairs), theta = 1e5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from numpylm.layers import rope, rope_cos_sin

HEAD_SIZE = 64  # SmolLM2-135M: n_embd 576 / n_head 9
THETA = 100_000.0  # SmolLM2-135M's rope_theta
PAIRS = (0, 2, 4)  # the pairs drawn turning: the fastest ones
TURNS = 13  # positions 0 .. 12 on the circles
POSITIONS = 512  # positions 0 .. 511 in the table of every pair
OUT = Path(__file__).resolve().parents[1] / "images" / "rope.png"


def rope_data(
    head_size: int = HEAD_SIZE,
    theta: float = THETA,
    pairs: tuple[int, ...] = PAIRS,
    turns: int = TURNS,
    positions: int = POSITIONS,
) -> dict[str, np.ndarray]:
    """The arrays the picture plots.

    - ``points``: (len(pairs), turns, 2): one vector of ``head_size`` channels, whose pair ``j``
      starts as (r_j, 0) with r_j = 1, 0.75, 0.5, ..., turned by ``rope`` at positions
      0 .. turns-1; ``points[j, m]`` is what its pair ``pairs[j]`` becomes at position ``m``.
    - ``radii``: (len(pairs),) the r_j.
    - ``cos``: (head_size // 2, positions): ``cos`` of every pair's angle at every position, from
      ``rope_cos_sin`` (row i: pair i).
    """
    half = head_size // 2
    radii = 1.0 - 0.25 * np.arange(len(pairs))
    x = np.zeros((1, 1, turns, head_size))  # (B, H, T, D): the same vector at every position
    x[..., list(pairs)] = radii  # pair i is channels (i, i + D/2): (r, 0)
    cos, sin = rope_cos_sin(np.arange(turns), head_size, theta, np.float64)  # (T, D/2)
    turned = rope(x, cos, sin)[0, 0]  # (T, D)
    points = np.stack([turned[:, [i, i + half]] for i in pairs])  # (pairs, T, 2)
    table, _ = rope_cos_sin(np.arange(positions), head_size, theta, np.float64)  # (P, D/2)
    return {"points": points, "radii": radii, "cos": table.T}


def figure(data: dict[str, np.ndarray] | None = None, pairs: tuple[int, ...] = PAIRS) -> Any:
    """The figure of ``data`` (default: ``rope_data()``): the circles, and the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = rope_data() if data is None else data
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1, 1.6]}, layout="constrained"
    )
    angle = np.linspace(0, 2 * np.pi, 200)
    for j, (i, pts) in enumerate(zip(pairs, data["points"], strict=True)):
        r = data["radii"][j]
        left.plot(r * np.cos(angle), r * np.sin(angle), color="0.85", lw=1, zorder=1)
        left.plot(pts[:, 0], pts[:, 1], "o-", ms=4, lw=1, zorder=2, label=f"pair {i}")
        for m in (0, 1, 2, len(pts) - 1):
            left.annotate(str(m), pts[m], textcoords="offset points", xytext=(4, 4), fontsize=7)
    left.set_aspect("equal")
    left.set_title(f"one vector at positions 0 .. {len(data['points'][0]) - 1}")
    left.set_xlabel("first channel of the pair")
    left.set_ylabel("second channel of the pair")
    left.legend(loc="lower left", fontsize=8)
    image = right.imshow(
        data["cos"], aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
    )
    right.set_title("cos(pos * theta^(-2i/D)): pair i, position pos")
    right.set_xlabel("position")
    right.set_ylabel("channel pair i")
    fig.colorbar(image, ax=right, shrink=0.8)
    return fig


def main() -> None:
    fig = figure()
    fig.savefig(OUT, dpi=100)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
