"""A Hub id, end to end and offline: ``numpylm.load`` and ``numpylm.from_pretrained`` given
``"owner/name"`` go through ``huggingface_hub.snapshot_download`` for real, which finds the
files in the Hugging Face cache.

The cache is built here in a temporary folder, laid out as ``huggingface_hub`` lays it out
(``models--owner--name/refs/main`` naming a snapshot, the snapshot's folder holding the files),
from the committed fixtures. ``HF_HUB_OFFLINE`` keeps the network out: what is tested is the
path a Hub id takes once the files are on the machine, the same path as after a download.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import numpylm
from numpylm.io.checkpoint import CheckpointError
from numpylm.models.gpt2.model import GPT
from numpylm.models.llama import Llama

FIXTURES = Path(__file__).parent / "fixtures"
REVISION = "0123456789abcdef0123456789abcdef01234567"  # a snapshot's name is its commit hash
TOL = 1e-4  # as test_llama_loading: the fixtures' logits are transformers'


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face cache in ``tmp_path`` holding three fixtures as
    ``numpylm-tests/<name>``; huggingface_hub reads its settings when it is imported, so its
    constants are set as well as the environment."""
    import huggingface_hub.constants as hub

    cache = tmp_path / "hub"
    for name in ("tiny-gpt2", "tiny-llama", "tiny-qwen2"):
        repo = cache / f"models--numpylm-tests--{name}"
        shutil.copytree(FIXTURES / name, repo / "snapshots" / REVISION)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    return cache


@pytest.mark.parametrize(
    ("name", "kind"), [("tiny-gpt2", GPT), ("tiny-llama", Llama), ("tiny-qwen2", Llama)]
)
def test_a_hub_id_in_the_cache_loads_as_its_folder_does(
    hub_cache: Path, name: str, kind: type
) -> None:
    model = numpylm.from_pretrained(f"numpylm-tests/{name}")
    assert type(model) is kind
    ids, ref = (
        np.load(FIXTURES / name / f, allow_pickle=False) for f in ("inputs.npy", "logits.npy")
    )
    assert np.abs(model(ids) - ref).max() <= TOL


def test_load_by_hub_id_brings_the_tokenizer(hub_cache: Path) -> None:
    model, tok = numpylm.load("numpylm-tests/tiny-gpt2")
    _, local = numpylm.load(FIXTURES / "tiny-gpt2")
    assert type(model) is GPT
    text = "Who was the first president?"
    assert tok.encode(text) == local.encode(text) and tok.decode(tok.encode(text)) == text


def test_a_hub_id_absent_from_the_cache_says_how_to_get_it(hub_cache: Path) -> None:
    with pytest.raises(CheckpointError) as excinfo:
        numpylm.from_pretrained("numpylm-tests/not-downloaded")
    message = str(excinfo.value)
    assert "'numpylm-tests/not-downloaded'" in message
    assert "not in the local Hugging Face cache" in message and "Connect once" in message
