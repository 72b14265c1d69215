"""The teaching notebooks (examples/*.ipynb) run top to bottom, and are committed with outputs.

Each notebook is executed with nbclient in a fresh ``python3`` kernel (this interpreter's
ipykernel), in examples/ as its working directory, exactly as a learner would run it; any cell
that raises fails the test, with the cell and its traceback in the message. The kernel inherits
the environment, so ``NUMPYLM_DATA`` reaches the notebooks (they use the shared data when it is
set, and say so and skip that part when not). The Hub is switched off (``HF_HUB_OFFLINE=1``): a
test never downloads GPT-2, and the notebooks that use it fall back or skip, as they do offline.
BLAS runs one thread (``OPENBLAS_NUM_THREADS=1``), as when the stored outputs were made.
``TMPDIR`` points into the test's own temporary folder, so the runs and models the notebooks
write (to ``tempfile.mkdtemp()``) are cleaned up with it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from numpylm import GPT, GPTConfig, Tokenizer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds for one cell; the slowest (training, fine-tuning) take about a minute


def _id(path: Path) -> str:
    return path.name


def execute(path: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run every cell of the notebook at ``path`` in a new kernel; the notebook with outputs."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tmp.mkdir(exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(tmp))  # the kernel inherits the environment
    # One BLAS thread, as the stored outputs were made: the training notebooks take about a
    # minute each so, and several times as long with OpenBLAS's threads on a busy machine.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError at the first cell that fails
    return dict(nb)


def output_text(nb: dict[str, Any]) -> str:
    """Everything the code cells printed or returned as text."""
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            parts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(parts)


def test_the_notebooks_are_numbered_in_order() -> None:
    """01_, 02_, ... with no gap and no repeat, so the story reads in one order."""
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 8, names
    assert [n[:3] for n in names] == [f"{i:02d}_" for i in range(1, len(names) + 1)], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_ends_with_three_exercises(path: Path) -> None:
    """Three "predict, then run" exercises close each notebook: a markdown question, then one
    collapsed code cell tagged ``solution`` whose assert checks the answer (run by
    test_notebook_runs, so a wrong solution fails the suite)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    text = ["".join(c["source"]) for c in cells]
    heading = next(
        (i for i, t in enumerate(text) if any(x.startswith("## Exercises") for x in t.split("\n"))),
        None,
    )
    assert heading is not None, f"{path.name} has no '## Exercises' section"
    questions = [i for i, t in enumerate(text) if t.startswith("### Exercise")]
    assert len(questions) == 3, f"{path.name} has {len(questions)} exercises, not 3"
    assert all(i > heading for i in questions), f"{path.name}: an exercise before the heading"
    for n, i in enumerate(questions, start=1):
        assert cells[i]["cell_type"] == "markdown", f"{path.name}: exercise {n} is not markdown"
        assert text[i].startswith(f"### Exercise {n}:"), f"{path.name}: exercise {n} misnumbered"
        solution = cells[i + 1]
        assert solution["cell_type"] == "code", f"{path.name}: exercise {n} has no solution cell"
        meta = solution["metadata"]
        assert "solution" in meta.get("tags", []), f"{path.name}: solution {n} is not tagged"
        assert meta.get("jupyter", {}).get("source_hidden"), f"{path.name}: solution {n} shows"
        assert "assert " in text[i + 1], f"{path.name}: solution {n} checks nothing"
        # stored without its output, so the answer is not printed under the question; a learner
        # runs the cell to see it, and test_notebook_runs runs its assert
        assert not solution["outputs"] and solution["execution_count"] is None, (
            f"{path.name}: solution {n} is stored with its output; clear it"
        )
    later = "\n".join(text[questions[-1] :]).split("\n")
    assert not any(x.startswith("## ") for x in later), (
        f"{path.name}: the exercises must close the notebook"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute(path, tmp_path, monkeypatch)
    assert output_text(nb).strip(), f"{path.name} printed nothing"


@pytest.mark.slow
def test_gpt2_notebook_with_a_local_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiktoken_gpt2: None
) -> None:
    """07_gpt2's cells that run only when GPT-2 is there, run on a small random model with
    GPT-2's vocabulary (``NUMPYLM_GPT2`` names a local folder), so they cannot rot offline."""
    config = GPTConfig(vocab_size=50257, n_ctx=1024, n_layer=2, n_head=2, n_embd=64)
    local = tmp_path / "gpt2"
    GPT(config, seed=0).save_pretrained(local)
    Tokenizer.gpt2().save_pretrained(local)
    monkeypatch.setenv("NUMPYLM_GPT2", str(local))
    text = output_text(execute(EXAMPLES / "07_gpt2.ipynb", tmp_path / "tmp", monkeypatch))
    assert "skipped" not in text
    assert "generate() == the loop by hand" in text
    assert "asked 100 times" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_is_committed_with_outputs(path: Path) -> None:
    """Run top to bottom once and saved with the outputs, so it reads well on GitHub."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    lesson = [c for c in code if "solution" not in c["metadata"].get("tags", [])]
    counts = [c["execution_count"] for c in lesson]  # the solutions, last, are stored cleared
    assert counts == list(range(1, len(lesson) + 1)), (
        f"{path.name}: execution counts {counts}; run all cells in order from a fresh kernel and "
        "save the notebook with its outputs (then clear the solutions' outputs)"
    )
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{path.name} was saved with an error output: {errors[0].get('ename')}"
    assert sum(bool(c["outputs"]) for c in code) >= len(code) // 2, f"{path.name}: few outputs"
    sources = "".join("".join(c["source"]) for c in nb["cells"])
    assert "/work/" not in sources, f"{path.name} hard-codes a local path"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_links_resolve(path: Path) -> None:
    """Every relative link in the text (to the source, the docs, the other notebooks) exists."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert links, f"{path.name} links to nothing"
    missing = [t for t in links if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{path.name} links to files that do not exist: {missing}"
