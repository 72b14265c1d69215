"""Shared fixtures: the data beside the project, and small models."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tinyrun import VERSE

from numpylm import GPT, GPTConfig
from numpylm.models import parallel

# The GPT-2 BPE files and Tiny Shakespeare are not part of the project: CI points NUMPYLM_DATA at
# the shared data folder (../shared/data); on a fresh clone the tests that need them skip.
DATA_ENV = "NUMPYLM_DATA"

# tiktoken caches the files it downloads under the sha1 of their URL (../shared/data/README.md).
TIKTOKEN_CACHE_NAMES = {
    "gpt2/vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "gpt2/encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
    "gpt2/r50k_base.tiktoken": "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4",
}


def data_file(relative: str) -> Path:
    """A file of the shared data folder, or skip the test with the reason."""
    root = os.environ.get(DATA_ENV)
    if not root:
        pytest.skip(f"{DATA_ENV} is not set: point it at the shared data folder to run this test")
    path = Path(root) / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent ({DATA_ENV}={root})")
    return path


@pytest.fixture(scope="session")
def gpt2_files() -> Path:
    """The folder holding OpenAI's GPT-2 BPE files (encoder.json, vocab.bpe)."""
    return data_file("gpt2/encoder.json").parent


@pytest.fixture(scope="session")
def tiktoken_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Make tiktoken.get_encoding("gpt2") work offline, from the shared files."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for relative, name in TIKTOKEN_CACHE_NAMES.items():
        shutil.copyfile(data_file(relative), cache / name)
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    yield
    if old is None:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    else:
        os.environ["TIKTOKEN_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    """Tiny Shakespeare (1,115,394 bytes)."""
    return data_file("tinyshakespeare/input.txt")


TINY = GPTConfig(vocab_size=67, n_ctx=32, n_layer=2, n_head=4, n_embd=16)


@pytest.fixture
def tiny_model() -> GPT:
    """A small random float32 GPT (vocab 67, context 32, 2 layers, 4 heads, 16 channels)."""
    return GPT(TINY, seed=0)


@pytest.fixture
def tiny_model64() -> GPT:
    """The same shape in float64, for exact comparisons and gradient checks."""
    return GPT(TINY, seed=0, dtype=np.float64)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small text with a pattern to learn (``tinyrun.VERSE``: three lines, repeated)."""
    path = tmp_path_factory.mktemp("corpus") / "verse.txt"
    path.write_text(VERSE * 50, encoding="utf-8")
    return path


@pytest.fixture
def pool_threads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The names of the threads that ran the backend's tasks."""
    names: set[str] = set()
    real_run = parallel.run

    def recording_run(tasks: Sequence[Callable[[], object]]) -> None:
        def wrap(task: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                names.add(threading.current_thread().name)
                return task()

            return run

        real_run([wrap(t) for t in tasks])

    monkeypatch.setattr(parallel, "run", recording_run)
    return names


# SmolLM2-135M-Instruct (``numpylm download smollm2``, or $NUMPYLM_SMOLLM2): read once per test
# session, by numpylm and by transformers, since each reading takes seconds.
SMOLLM2_ENV = "NUMPYLM_SMOLLM2"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2's GGUF file, or a skip saying how to get it."""
    from numpylm.download import cache_dir, spec

    path = Path(os.environ.get(SMOLLM2_ENV) or cache_dir() / spec("smollm2").filename)
    if not path.is_file():
        pytest.skip(f"{path} is absent: run `numpylm download smollm2` or set {SMOLLM2_ENV}")
    return path


@pytest.fixture(scope="session")
def smollm2_model(smollm2_gguf: Path) -> tuple[Any, Any]:
    """``numpylm.load`` of SmolLM2's file: (model, tokenizer), loaded once per session (it
    takes 5 to 12 s): every test that runs SmolLM2 shares this one."""
    import numpylm

    return numpylm.load(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_gguf: Path) -> tuple[object, object]:
    """transformers' own reading of the same file: (model in float32, tokenizer)."""
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    transformers = pytest.importorskip("transformers")
    import torch

    path = smollm2_gguf
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    return hf, transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
