"""Reading and writing model files: local directories, the Hugging Face Hub, atomic writes.

A model directory has Hugging Face's layout, so numpylm, ``transformers`` and the Hub all share it:

- ``config.json``: the model's shape (``GPT2Config`` fields),
- ``model.safetensors``: the weights, a JSON header and raw little-endian arrays (no pickle, so
  opening an untrusted file never runs code),
- ``vocab.json`` + ``merges.txt``: the tokenizer, when the directory has one.

This module knows files, not models: it returns plain dicts and arrays, and ``model.py`` and
``tokenizer.py`` build on it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.ckpt.index")

# The files a GPT-2 repository on the Hub has that numpylm reads; nothing else is downloaded.
HUB_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


class CheckpointError(ValueError):
    """A model file or directory that numpylm cannot use; the message says why and what to do."""


def looks_like_path(name_or_path: str | os.PathLike[str]) -> bool:
    """True when the argument is meant as a local path rather than a Hub id such as ``gpt2``."""
    s = os.fspath(name_or_path)
    return (
        isinstance(name_or_path, os.PathLike)
        or os.path.exists(s)
        or s.startswith((".", "~", os.sep))
        or s.count("/") > 1
        or (os.altsep is not None and os.altsep in s)
    )


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """Return a local directory holding the model ``name_or_path``.

    A local directory is returned as it is. Anything else is taken as a Hugging Face Hub id
    (``gpt2``, ``openai-community/gpt2-medium``, ...) and downloaded with ``huggingface_hub``
    into the standard Hugging Face cache, so a model already fetched for ``transformers`` is
    reused and ``HF_HUB_OFFLINE=1`` works.

    Raises:
        FileNotFoundError: a local path that does not exist or is not a directory.
        CheckpointError: a Hub id that cannot be found or fetched.
    """
    if looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"no model directory at {str(path)!r}: check the path")
        if not path.is_dir():
            raise FileNotFoundError(
                f"{str(path)!r} is a file; give the directory that holds config.json and "
                f"{WEIGHTS_FILE}"
            )
        return path
    return _download(os.fspath(name_or_path))


def _download(repo_id: str) -> Path:
    """Fetch the files numpylm needs from the Hub (or find them in the local HF cache)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
    except GatedRepoError as e:
        raise CheckpointError(
            f"the Hub model {repo_id!r} is gated: accept its licence on the Hub and log in "
            "with `huggingface-cli login`"
        ) from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(
            f"no model {repo_id!r} on the Hugging Face Hub and no local directory of that name: "
            "check the spelling (GPT-2 ids: gpt2, gpt2-medium, gpt2-large, gpt2-xl)"
        ) from e
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"could not fetch {repo_id!r}: it is not in the local Hugging Face cache and the Hub "
            "could not be reached (offline, or HF_HUB_OFFLINE=1). Connect once to download it, "
            "or pass the path of a local model directory"
        ) from e
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise CheckpointError(f"could not fetch {repo_id!r} from the Hugging Face Hub: {e}") from e


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, with an error that names the file when it is not valid JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the file is corrupt") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} should hold a JSON object, found {type(data).__name__}")
    return data


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model directory (one file, or the shards of an index)."""
    single = model_dir / WEIGHTS_FILE
    if single.is_file():
        return [single]
    index = model_dir / WEIGHTS_INDEX_FILE
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        return [model_dir / s for s in shards]
    pickles = [name for name in PICKLE_FILES if (model_dir / name).exists()]
    if pickles:
        raise CheckpointError(
            f"{model_dir} has {pickles[0]} but no {WEIGHTS_FILE}. numpylm does not open pickle "
            "files, since loading one can run arbitrary code. Convert it once, where you trust "
            "the file, with transformers:\n"
            '  python -c "from transformers import GPT2LMHeadModel as M; '
            f"M.from_pretrained('{model_dir}').save_pretrained('{model_dir}')\""
        )
    raise CheckpointError(
        f"{model_dir} has no {WEIGHTS_FILE}: it is not a model directory (one holds "
        f"{CONFIG_FILE} and {WEIGHTS_FILE}, as save_pretrained writes them)"
    )


# safetensors' dtype names -> NumPy's (little-endian, as the format stores them). bfloat16 has
# no NumPy type: its 16 bits are read as integers and widened to float32 (see _bf16_to_f32).
_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}  # fmt: skip


def read_safetensors(path: Path, skip: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file as a NumPy array, except the names in ``skip``.

    The format is simple enough to read by hand: 8 bytes giving the header's length N
    (little-endian), N bytes of JSON naming each tensor's dtype, shape and byte range, then the
    raw data. Reading it here, each tensor goes straight from the file into its own array, so
    loading needs no second copy of the file in memory (GPT-2 124M peaks near its own size).
    Nothing in the file is executed. bfloat16 tensors come back as float32.

    Raises:
        CheckpointError: a truncated or corrupt file.
    """
    skipped = set(skip)
    size = path.stat().st_size
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if size < 8 or header_len > size - 8:
            raise _unreadable(path, f"the header claims {header_len} bytes, the file has {size}")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _unreadable(path, f"the header is not JSON: {e}") from e
        data_start = 8 + header_len
        for name, info in header.items():
            if name == "__metadata__" or name in skipped:
                continue
            out[name] = _read_tensor(f, path, name, info, data_start, size)
    return out


def _read_tensor(
    f: Any, path: Path, name: str, info: dict[str, Any], data_start: int, size: int
) -> np.ndarray:
    """One tensor of a safetensors file, read into a new array (see ``read_safetensors``)."""
    try:
        dtype = np.dtype(_DTYPES[info["dtype"]])
        shape = tuple(int(n) for n in info["shape"])
        begin, end = (int(n) for n in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as e:
        raise _unreadable(path, f"tensor {name!r} has a malformed entry {info!r}") from e
    nbytes = math.prod(shape) * dtype.itemsize
    if end - begin != nbytes:
        raise _unreadable(path, f"tensor {name!r} spans {end - begin} bytes, its shape {nbytes}")
    if data_start + end > size:
        raise _unreadable(path, f"tensor {name!r} ends past the end of the file")
    array = np.empty(shape, dtype=dtype)
    f.seek(data_start + begin)
    if f.readinto(array.reshape(-1).view(np.uint8)) != nbytes:
        raise _unreadable(path, f"tensor {name!r} is cut short")
    return _bf16_to_f32(array) if info["dtype"] == "BF16" else array


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32, so shifting its 16 bits up converts it exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _unreadable(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable safetensors file ({why}); it may be truncated by an "
        "interrupted download or copy: fetch or save it again"
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the file is
    then renamed over ``path`` (a rename within one file system is atomic).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a model file is for reading
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a JSON object atomically, indented for people to read."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def write_safetensors(
    path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Write arrays to a safetensors file atomically (arrays are made contiguous first)."""
    from safetensors.numpy import save

    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {"format": "pt", **(metadata or {})}  # "pt": transformers reads it with torch
    atomic_write_bytes(path, save(contiguous, metadata=meta))
