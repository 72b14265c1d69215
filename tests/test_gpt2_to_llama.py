"""docs/guide/gpt2-to-llama.md stays true to the code.

- Every ```diff block's lines are numpylm's: each ``-`` line is a line of GPT-2's model file or
  of ``layers/``, each ``+`` line a line of the Llama family's model file or of ``layers/``
  (whitespace-normalised; a trailing ``# comment`` may be left out). ``@@ ... @@`` lines are
  labels. So the page cannot show code that is not there.
- The RoPE picture, docs/images/rope.png, is drawn by docs/scripts/rope_picture.py from the
  arrays its ``rope_data`` returns; those are checked against ``cos`` and ``sin`` of
  ``pos * theta ** (-2i / D)`` computed here, and the figure against those arrays.

The page's code blocks (the RoPE property, the KV cache bytes) run in tests/test_docs.py.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "guide" / "gpt2-to-llama.md"
SCRIPT = ROOT / "docs" / "scripts" / "rope_picture.py"
SRC = ROOT / "src" / "numpylm"
LAYERS = sorted((SRC / "layers").glob("*.py"))
GPT2 = [SRC / "models" / "gpt2" / "model.py", *LAYERS]
LLAMA = [SRC / "models" / "llama" / "model.py", *LAYERS]

DIFF = re.compile(r"^```diff\n(.*?)^```$", re.MULTILINE | re.DOTALL)
COMMENT = re.compile(r"\s+#\s.*$")  # a trailing comment, after code


def normalise(line: str) -> str:
    return " ".join(line.split())


def source_lines(paths: list[Path]) -> set[str]:
    """Every line of the files, whitespace-normalised, and also without a trailing comment."""
    lines = set()
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            lines.add(normalise(line))
            lines.add(normalise(COMMENT.sub("", line)))
    return lines - {""}


def diff_blocks() -> list[str]:
    return DIFF.findall(PAGE.read_text(encoding="utf-8"))


def test_the_page_has_its_diffs() -> None:
    blocks = diff_blocks()
    assert len(blocks) >= 6, "one diff per change: norms, RoPE, SwiGLU, GQA, biases, LM head"
    for block in blocks:
        signs = {line[:1] for line in block.splitlines()}
        assert "+" in signs, f"a diff without a '+' line:\n{block}"


@pytest.mark.parametrize("number", range(len(diff_blocks())))
def test_every_diff_line_is_in_the_source(number: int) -> None:
    block = diff_blocks()[number]
    gpt2, llama = source_lines(GPT2), source_lines(LLAMA)
    missing = []
    for line in block.splitlines():
        sign, code = line[:1], normalise(line[1:])
        if line.startswith("@@") or not code:
            continue
        if sign == "-":
            found = code in gpt2
        elif sign == "+":
            found = code in llama
        elif sign == " ":
            found = code in gpt2 or code in llama
        else:
            raise AssertionError(f"not a diff line (starts with {sign!r}): {line!r}")
        if not found:
            missing.append(line)
    where = "'-' in GPT-2's model.py or layers/, '+' in the Llama family's model.py or layers/"
    assert not missing, f"diff {number} shows lines that are not in the source ({where}):\n" + (
        "\n".join(missing)
    )


def test_the_diff_check_can_fail() -> None:
    """The check on a made-up line, on a line of the wrong family, and on a true one."""
    gpt2, llama = source_lines(GPT2), source_lines(LLAMA)
    assert normalise('x = rms_norm(x, p["norm.weight"], c.norm_eps)') in llama
    assert normalise('x = rms_norm(x, p["norm.weight"], c.norm_eps)') not in gpt2
    assert normalise("return wte[ids] + wpe[pos] + 1") not in gpt2
    assert normalise("return xc * rstd * w + b  # a comment") not in gpt2  # not the source's
    assert normalise("return xc * rstd * w + b") in gpt2


def rope_picture() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rope_picture", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rope_picture_plots_ropes_angles() -> None:
    pic = rope_picture()
    D, theta, pairs, turns, positions = 64, 100_000.0, (0, 2, 4), 13, 512
    assert (pic.HEAD_SIZE, pic.THETA, pic.PAIRS, pic.TURNS, pic.POSITIONS) == (
        D,
        theta,
        pairs,
        turns,
        positions,
    )
    data = pic.rope_data()
    # Independently: pair i turns by pos * theta ** (-2i / D).
    i = np.arange(D // 2)
    angle = np.arange(positions)[:, None] * theta ** (-2.0 * i / D)  # (P, D/2)
    np.testing.assert_allclose(data["cos"], np.cos(angle).T, atol=1e-12)
    for j, pair in enumerate(pairs):
        r, a = data["radii"][j], angle[:turns, pair]
        expected = np.stack([r * np.cos(a), r * np.sin(a)], axis=-1)  # (turns, 2)
        np.testing.assert_allclose(data["points"][j], expected, atol=1e-12)
    assert len(set(data["radii"])) == len(pairs)  # the circles do not overlap


def test_the_rope_figure_draws_those_arrays() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    pic = rope_picture()
    data = pic.rope_data()
    fig = pic.figure(data)
    try:
        left, right = fig.axes[:2]
        drawn = [line.get_xydata() for line in left.get_lines() if line.get_marker() == "o"]
        assert len(drawn) == len(pic.PAIRS)
        for points, xy in zip(data["points"], drawn, strict=True):
            np.testing.assert_array_equal(xy, points)
        np.testing.assert_array_equal(np.asarray(right.images[0].get_array()), data["cos"])
    finally:
        plt.close(fig)


def test_the_page_shows_the_picture() -> None:
    image = ROOT / "docs" / "images" / "rope.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](../images/rope.png)" in PAGE.read_text(encoding="utf-8")
