"""Bad input gives a clear error: the right exception type, a message that says what was wrong
and what to do, raised by numpylm itself rather than from deep inside NumPy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import numpylm
from numpylm import GPT, CheckpointError

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-gpt2"
PACKAGE = Path(numpylm.__file__).resolve().parent


def raised_by_numpylm(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """The exception was raised on purpose in numpylm's code, not by NumPy (or another
    library) on the way through, and no frame of the traceback is inside NumPy."""
    raise_site = Path(str(excinfo.traceback[-1].path)).resolve()
    assert raise_site.is_relative_to(PACKAGE), f"raised in {raise_site}"
    numpy_dir = Path(np.__file__).resolve().parent
    assert not any(Path(str(e.path)).resolve().is_relative_to(numpy_dir) for e in excinfo.traceback)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A writable copy of the tiny fixture checkpoint (config 3 layers, 48 channels, n_ctx 64)."""
    out = tmp_path / "model"
    shutil.copytree(FIXTURE, out)
    return out


@pytest.fixture(scope="module")
def model() -> GPT:
    return GPT.from_pretrained(FIXTURE)  # vocab_size 263, n_ctx 64


# ----------------------------------------------------------------------------------------------
# Files and directories


def test_unknown_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # Offline, so the test never touches the network and fails at once. huggingface_hub reads
    # the variable when it is imported, so its constant is set too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as excinfo:
        GPT.from_pretrained("no-such-user/no-such-gpt2-model")
    message = str(excinfo.value)
    assert "'no-such-user/no-such-gpt2-model'" in message
    assert "Hugging Face" in message and "local model directory" in message
    raised_by_numpylm(excinfo)


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(FileNotFoundError) as excinfo:
        GPT.from_pretrained(missing)
    assert str(missing) in str(excinfo.value) and "check the path" in str(excinfo.value)
    raised_by_numpylm(excinfo)


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as excinfo:
        GPT.from_pretrained(tmp_path)
    assert "config.json" in str(excinfo.value) and "not a model directory" in str(excinfo.value)
    raised_by_numpylm(excinfo)


def test_pickle_checkpoint_is_refused(model_dir: Path) -> None:
    (model_dir / "model.safetensors").unlink()
    # Not a real pickle: if numpylm ever tried to unpickle it, the error would be another one.
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError) as excinfo:
        GPT.from_pretrained(model_dir)
    message = str(excinfo.value)
    assert "pytorch_model.bin" in message and "pickle" in message
    assert "arbitrary code" in message
    assert "save_pretrained" in message and "transformers" in message  # how to convert it
    raised_by_numpylm(excinfo)


def test_config_disagrees_with_tensor_shapes(model_dir: Path) -> None:
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["n_positions"] = 32  # the weights have 64 positions
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as excinfo:
        GPT.from_pretrained(model_dir)
    message = str(excinfo.value)
    assert "'wpe.weight'" in message
    assert "(64, 48)" in message and "(32, 48)" in message
    raised_by_numpylm(excinfo)


def test_one_tensor_with_a_wrong_shape(model_dir: Path) -> None:
    from safetensors.numpy import load_file, save_file

    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    tensors["transformer.h.1.mlp.c_fc.bias"] = np.zeros(191, dtype=np.float32)  # needs 4 * 48
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as excinfo:
        GPT.from_pretrained(model_dir)
    message = str(excinfo.value)
    assert "'h.1.mlp.c_fc.bias'" in message and "(191,)" in message and "(192,)" in message
    raised_by_numpylm(excinfo)


def test_missing_tensor_is_named(model_dir: Path) -> None:
    from safetensors.numpy import load_file, save_file

    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    del tensors["transformer.h.2.ln_2.bias"]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as excinfo:
        GPT.from_pretrained(model_dir)
    assert "missing h.2.ln_2.bias" in str(excinfo.value)
    raised_by_numpylm(excinfo)


@pytest.mark.parametrize("keep", [0.5, 100, 4])
def test_truncated_safetensors(model_dir: Path, keep: float) -> None:
    """Cut in the data, in the JSON header, and inside the 8-byte header length."""
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])
    with pytest.raises(CheckpointError) as excinfo:
        GPT.from_pretrained(model_dir)
    message = str(excinfo.value)
    assert str(path) in message and "truncated" in message and "again" in message
    raised_by_numpylm(excinfo)


# ----------------------------------------------------------------------------------------------
# Token ids


@pytest.mark.parametrize("bad", [-1, 263, 10**6])
def test_token_id_out_of_range(model: GPT, bad: int) -> None:
    with pytest.raises(ValueError) as excinfo:
        model(np.array([5, bad, 7]))
    message = str(excinfo.value)
    assert f"token id {bad}" in message and "0 to 262" in message
    raised_by_numpylm(excinfo)


def test_sequence_longer_than_context(model: GPT) -> None:
    with pytest.raises(ValueError) as excinfo:
        model(np.zeros((2, 65), dtype=np.int64))
    message = str(excinfo.value)
    assert "65 tokens" in message and "n_ctx=64" in message and "last 64" in message
    raised_by_numpylm(excinfo)


def test_cache_would_overflow(model: GPT) -> None:
    cache = model.new_cache()
    model(np.zeros(60, dtype=np.int64), cache=cache)
    with pytest.raises(ValueError) as excinfo:
        model(np.zeros(5, dtype=np.int64), cache=cache)
    message = str(excinfo.value)
    assert "cache holds 60" in message and "n_ctx=64" in message
    raised_by_numpylm(excinfo)
    assert cache.length == 60  # the refused call changed nothing
    model(np.zeros(4, dtype=np.int64), cache=cache)  # what still fits is accepted


def test_cache_made_for_another_batch_size(model: GPT) -> None:
    with pytest.raises(ValueError) as excinfo:
        model(np.zeros((3, 2), dtype=np.int64), cache=model.new_cache(batch_size=2))
    assert "batch size 2" in str(excinfo.value) and "3" in str(excinfo.value)
    raised_by_numpylm(excinfo)


@pytest.mark.parametrize(
    "ids",
    [
        np.array([1.0, 2.0, 3.0]),
        np.array([1.5, 2.0]),
        np.array([True, False, True]),
        [1.0, 2.0],
        np.array(["1", "2"]),
    ],
    ids=["float", "fractional", "bool", "float-list", "str"],
)
def test_non_integer_ids(model: GPT, ids: object) -> None:
    with pytest.raises(TypeError) as excinfo:
        model(ids)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "token ids must be an integer array" in message and "dtype" in message
    raised_by_numpylm(excinfo)


@pytest.mark.parametrize("ids", [np.zeros((1, 1, 3), dtype=np.int64), np.zeros(0, dtype=np.int64)])
def test_ids_with_a_wrong_shape(model: GPT, ids: np.ndarray) -> None:
    with pytest.raises(ValueError) as excinfo:
        model(ids)
    assert "shape" in str(excinfo.value)
    raised_by_numpylm(excinfo)


def test_ragged_ids(model: GPT) -> None:
    with pytest.raises(ValueError) as excinfo:
        model([[1, 2, 3], [4]])
    message = str(excinfo.value)
    assert "different lengths" in message and "attention_mask" in message
    raised_by_numpylm(excinfo)
