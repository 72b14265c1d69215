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
import re
import stat
import sys
import tempfile
from collections.abc import Iterable, Mapping
from io import BufferedReader
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.ckpt.index")

# The files a model repository on the Hub has that numpylm reads; nothing else is downloaded.
HUB_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    # the Llama family's tokenizer, its special tokens and chat template
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
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


def regular_file(path: str | os.PathLike[str], what: str, hint: str = "check the path") -> int:
    """Check that ``path`` is a regular file (following symlinks) and return its size in bytes.

    numpylm reads a file whole, often more than once (to checksum it, then to read it, then to
    resume from it), and sizes it first to know whether it fits in memory: a directory, a named
    pipe (FIFO), a device such as ``/dev/zero`` or a socket cannot be read that way.

    Args:
        what: the file, for the message ("the data file", "vocab.json").
        hint: what to do about a path that does not exist.

    Raises:
        FileNotFoundError: nothing at ``path`` ("no {what} at '...': {hint}").
        CheckpointError: something that is not a regular file, saying what it is.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                f"{what} {os.fspath(path)!r} is a symbolic link to {os.readlink(path)!r}, "
                "which does not exist"
            ) from None
        raise FileNotFoundError(f"no {what} at {os.fspath(path)!r}: {hint}") from None
    except OSError as e:  # a dangling link's loop, a path through a file, no permission
        raise CheckpointError(f"{what} {os.fspath(path)!r} cannot be read: {e.strerror}") from None
    if stat.S_ISREG(mode):
        return os.stat(path).st_size
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
    )
    raise CheckpointError(
        f"{what} {os.fspath(path)!r} is {kind}, not a file: numpylm reads a file whole and "
        "sizes it first, so give the path of a regular file"
    )


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, with an error that names the file when it is not one.

    Raises:
        CheckpointError: the path is not a regular file (``regular_file``); the file is not
            UTF-8 text, not valid JSON (nesting too deep for the parser included), or valid
            JSON that is not an object.
        OSError: the file cannot be read (FileNotFoundError when it is absent).
    """
    regular_file(path, path.name)  # a FIFO would block the read below, a directory mislead it
    return _json_object(path, path.read_bytes())


def _json_object(path: Path, raw: bytes) -> dict[str, Any]:
    """``raw``, the bytes of the file ``path``, as a JSON object (see ``read_json``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(
            f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start} "
            "cannot be decoded), so it is not a JSON file: the file is corrupt or is another "
            "kind of file saved under this name"
        ) from None
    try:
        data = json.loads(text)
    except RecursionError:  # Python's parser recurses once per nested array or object
        raise CheckpointError(
            f"{path} nests JSON arrays or objects too deeply for Python's parser (about "
            f"{sys.getrecursionlimit()} levels); the file is corrupt"
        ) from None
    except ValueError as e:  # JSONDecodeError, or an integer of more than 4300 digits
        raise CheckpointError(f"{path} is not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} should hold a JSON object ({{...}}), found {_json_type(data)}"
        )
    return data


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, (dict, _Object)):
        return "an object"
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "an integer"}
    kinds |= {float: "a number with a decimal point", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model directory (one file, or the shards of an index).

    Raises:
        CheckpointError: no weights; only pickle files; an index whose ``weight_map`` is not an
            object of tensor names to shard file names in the directory, or names a missing
            shard.
    """
    single = model_dir / WEIGHTS_FILE
    if os.path.lexists(single):  # whatever is there: a directory or a pipe is named as such
        regular_file(single, WEIGHTS_FILE)
        return [single]
    index = model_dir / WEIGHTS_INDEX_FILE
    if os.path.lexists(index):
        return _shards(index)
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


def _shards(index: Path) -> list[Path]:
    """The shard files an index's ``weight_map`` (tensor name -> file name) names, checked."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(
            f"{index} should have a weight_map: an object giving each tensor's shard file, "
            f"found {_json_type(weight_map) if weight_map != {} else 'an empty object'}; the "
            "index is corrupt: fetch or save the model again"
        )
    shards = set()
    for tensor, shard in weight_map.items():
        # A shard is a file beside the index: a path could read any file on the machine.
        if not isinstance(shard, str) or shard in ("", ".", "..") or Path(shard).name != shard:
            raise CheckpointError(
                f"{index}: weight_map gives tensor {tensor!r} the shard {shard!r}, which is not "
                "the name of a file in the model directory; the index is corrupt"
            )
        shards.add(shard)
    paths = [index.parent / shard for shard in sorted(shards)]
    for path in paths:
        if os.path.lexists(path):
            regular_file(path, f"the shard {path.name}")
        else:
            raise CheckpointError(
                f"{index} names the shard {path.name}, which is missing from {index.parent}: the "
                "download or copy is incomplete; fetch or save the model again"
            )
    return paths


# --- safetensors ------------------------------------------------------------------------------
#
# numpylm reads the format by hand (see read_safetensors) and accepts exactly the files the
# safetensors library accepts: the same header rules, checked before any data is read.

_HEADER_LIMIT = 100_000_000  # bytes: the library refuses a longer header (MAX_HEADER_SIZE)
_DEPTH_LIMIT = 127  # nested arrays and objects the library's JSON parser (serde_json) allows
_USIZE = 2**64  # shapes, offsets and sizes are Rust usize: whole numbers below 2**64

# Every dtype the format defines: name -> (bits per element, the NumPy type numpylm reads it
# as, little-endian as the format stores it). None: NumPy has no such type, so numpylm refuses
# the tensor. numpylm reads the types the library's NumPy loader reads, and bfloat16 besides:
# its 16 bits are read as integers and widened to float32 (see _bf16_to_f32).
_DTYPES: dict[str, tuple[int, str | None]] = {
    "BOOL": (8, "?"), "U8": (8, "u1"), "I8": (8, "i1"),
    "U16": (16, "<u2"), "I16": (16, "<i2"), "F16": (16, "<f2"), "BF16": (16, "<u2"),
    "U32": (32, "<u4"), "I32": (32, "<i4"), "F32": (32, "<f4"),
    "U64": (64, "<u8"), "I64": (64, "<i8"), "F64": (64, "<f8"), "C64": (64, "<c8"),
    "F4": (4, None), "F6_E2M3": (6, None), "F6_E3M2": (6, None), "F8_E5M2": (8, None),
    "F8_E4M3": (8, None), "F8_E8M0": (8, None), "F8_E4M3FNUZ": (8, None),
    "F8_E5M2FNUZ": (8, None),
}  # fmt: skip
_FIELDS = ("dtype", "shape", "data_offsets")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Corrupt(Exception):
    """A broken safetensors header or layout; ``read_safetensors`` turns it into a
    ``CheckpointError`` naming the file."""


class _Object(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs in file order, repeated keys kept (the header is
    parsed with ``object_pairs_hook=_Object``), so it can be checked as the library checks it."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in self) + "}"


class _Tensor(NamedTuple):
    """One header entry: the dtype's name, the shape, and the byte range [begin, end) in the
    data that follows the header."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_safetensors(path: Path, skip: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file as a NumPy array, except the names in ``skip``.

    The format is simple enough to read by hand: 8 bytes giving the header's length N
    (little-endian), N bytes of JSON naming each tensor's dtype, shape and byte range, then the
    raw data. Reading it here, each tensor goes straight from the file into its own array, so
    loading needs no second copy of the file in memory (GPT-2 124M peaks near its own size).
    Nothing in the file is executed.

    The whole header is checked before any data is read, by the rules of the safetensors
    library, which numpylm accepts exactly the files of: a header of at most 100,000,000
    bytes of UTF-8 JSON, an object whose ``__metadata__`` (optional) maps names to strings and
    whose every other entry has a dtype the format defines, a shape of whole numbers and
    ``data_offsets`` [begin, end]; the tensors' byte ranges, in order, tile the data from its
    first byte to the end of the file, each exactly as long as its shape and dtype make it.

    Dtypes: F16, F32 and F64 come back as they are stored; BF16 as float32 (exactly); the
    integer, BOOL and C64 tensors as NumPy's integer, bool and complex64 arrays (an optimizer
    state's step count is an I64). The float8, float6 and float4 types have no NumPy type and
    are refused (unless skipped). Which dtypes a *model* accepts is ``formats.check_floating``'s
    business: floats only.

    Raises:
        CheckpointError: the only error: a truncated or corrupt file (naming the tensor when
            one is at fault), a tensor of a dtype numpylm cannot hold, a file that cannot be
            opened or read.
    """
    skipped = set(skip)
    try:
        regular_file(path, path.name)  # open() would wait for ever on a named pipe
        with open(path, "rb") as f:
            tensors, data_start = _read_header(f, os.fstat(f.fileno()).st_size)
            wanted = {name: t for name, t in tensors.items() if name not in skipped}
            for name, t in wanted.items():
                if _DTYPES[t.dtype][1] is None:
                    raise CheckpointError(
                        f"{path}: tensor {name!r} is stored as {t.dtype}, which numpylm cannot "
                        "read (NumPy has no such type; numpylm reads F16, BF16, F32, F64 and "
                        "the integer and BOOL types). Convert it to float16 or float32 where "
                        "the file was made"
                    )
            return {name: _read_tensor(f, path, name, t, data_start) for name, t in wanted.items()}
    except _Corrupt as e:
        raise _unreadable(path, str(e)) from None
    except OSError as e:
        raise CheckpointError(
            f"{path} could not be read ({e.strerror or e}): check that it is a file you can read"
        ) from e


def _read_header(f: BufferedReader, size: int) -> tuple[dict[str, _Tensor], int]:
    """The header of the open file ``f`` of ``size`` bytes, checked (see ``read_safetensors``),
    and where its data starts."""
    if size < 8:
        raise _Corrupt(f"the file has {size} bytes, fewer than the 8 that give the header's length")
    header_len = int.from_bytes(f.read(8), "little")
    if header_len > _HEADER_LIMIT:
        raise _Corrupt(
            f"the header claims {header_len:,} bytes, more than the format allows "
            f"({_HEADER_LIMIT:,})"
        )
    if header_len > size - 8:
        raise _Corrupt(f"the header claims {header_len:,} bytes, the file has {size:,} in all")
    raw = f.read(header_len)
    if len(raw) != header_len:
        raise _Corrupt("the header is cut short")
    tensors = _parse_header(raw)
    _check_layout(tensors, size - 8 - header_len)
    return tensors, 8 + header_len


def _parse_header(raw: bytes) -> dict[str, _Tensor]:
    """The header's bytes -> its tensors by name. JSON as the library's parser reads it:
    no NaN or Infinity, no number beyond float range, no lone surrogate escape such as
    ``"\\ud800"``, at most 127 levels of nesting, no repeated ``__metadata__`` (a repeated
    tensor name keeps its last entry, as in the library, and every entry must be valid)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Corrupt(f"the header is not UTF-8 text (byte {e.start} cannot be decoded)") from None
    try:
        document = json.loads(
            text,
            object_pairs_hook=_Object,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except RecursionError:
        raise _Corrupt("the header is not valid JSON: it nests too deeply") from None
    except ValueError as e:
        raise _Corrupt(f"the header is not valid JSON: {e}") from None
    _check_json(document)
    if not isinstance(document, _Object):
        raise _Corrupt(f"the header should be a JSON object, it is {_json_type(document)}")
    tensors: dict[str, _Tensor] = {}
    metadata_seen = False
    for name, info in document:
        if name == "__metadata__":
            if metadata_seen:
                raise _Corrupt("the header has two __metadata__ entries")
            metadata_seen = True
            if info is not None and not (
                isinstance(info, _Object) and all(isinstance(v, str) for _, v in info)
            ):
                raise _Corrupt(f"__metadata__ should map names to strings, it is {_show(info)}")
        else:
            tensors[name] = _tensor_entry(name, info)
    return tensors


def _parse_int(text: str) -> int | float:
    # serde_json reads -0 and integers beyond 64 bits as floats, which no shape or offset
    # accepts. JSON has no leading zeros, so more than 20 characters is always beyond 64 bits
    # (and int() of a long digit string is slow, and refused past 4300 digits).
    if text == "-0" or len(text) > 20:
        return _parse_float(text)
    value = int(text)
    return value if -(2**63) <= value < _USIZE else float(value)


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # Python reads 1e400 as inf; serde_json refuses it
        raise ValueError(f"the number {text[:30]} is out of range")
    return value


def _parse_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON (Python accepts it, the format does not)")


def _check_json(document: Any) -> None:
    """Refuse what Python's JSON parser accepts and the library's does not: nesting deeper than
    127 levels and lone surrogates (a surrogate pair is decoded to one character by both)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, list):  # an array, or an object (_Object is a list of pairs)
            if depth > _DEPTH_LIMIT:
                raise _Corrupt(f"the header nests arrays and objects deeper than {_DEPTH_LIMIT}")
            if isinstance(value, _Object):
                for key, item in value:
                    if _SURROGATE.search(key):
                        raise _Corrupt(f"the header's key {key!r} has a lone surrogate escape")
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and _SURROGATE.search(value):
            raise _Corrupt(f"the header's string {_show(value)} has a lone surrogate escape")


def _tensor_entry(name: str, info: Any) -> _Tensor:
    """One tensor's header entry, checked field by field (the layout is checked later)."""
    if isinstance(info, _Object):
        fields: dict[str, Any] = {}
        for key, value in info:  # other keys are ignored, as the library ignores them
            if key in _FIELDS:
                if key in fields:
                    raise _Corrupt(f"tensor {name!r} gives its {key} twice")
                fields[key] = value
        missing = [key for key in _FIELDS if key not in fields]
        if missing:
            raise _Corrupt(f"tensor {name!r} has no {missing[0]}: its entry is {_show(info)}")
        dtype, shape, offsets = (fields[key] for key in _FIELDS)
    elif type(info) is list and len(info) == 3:  # serde also reads a struct from an array
        dtype, shape, offsets = info
    else:
        raise _Corrupt(
            f"tensor {name!r} should have an object with its dtype, shape and data_offsets, "
            f"it has {_show(info)}"
        )
    if isinstance(dtype, _Object) and len(dtype) == 1 and dtype[0][1] is None:
        dtype = dtype[0][0]  # {"F32": null}: serde's other spelling of the name
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise _Corrupt(
            f"tensor {name!r} has the dtype {_show(dtype)}, which is not one of the format's "
            f"({', '.join(_DTYPES)})"
        )
    if type(shape) is not list or not all(_is_usize(n) for n in shape):
        raise _Corrupt(
            f"tensor {name!r} has the shape {_show(shape)}: a shape is a list of whole numbers "
            "from 0"
        )
    if type(offsets) is not list or len(offsets) != 2 or not all(_is_usize(n) for n in offsets):
        raise _Corrupt(
            f"tensor {name!r} has data_offsets {_show(offsets)}: they are two byte positions "
            "[begin, end] in the data, whole numbers from 0"
        )
    return _Tensor(dtype, tuple(shape), offsets[0], offsets[1])


def _is_usize(n: Any) -> bool:
    return type(n) is int and 0 <= n < _USIZE  # type(): True is an int to Python, not to JSON


def _check_layout(tensors: dict[str, _Tensor], data_size: int) -> None:
    """The tensors' byte ranges, in order, must tile the ``data_size`` bytes after the header:
    the first starts at 0, each where the last ended, the last at the end of the file; and each
    range must be as long as the tensor's shape and dtype make it. Together with the file
    size this bounds every array numpylm allocates by the bytes the file really has."""
    end, previous = 0, None
    for name, t in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if t.end < t.begin:
            raise _Corrupt(f"tensor {name!r} ends at byte {t.end}, before it begins ({t.begin})")
        if t.begin < end:
            raise _Corrupt(
                f"tensor {name!r} starts at byte {t.begin}, inside tensor {previous!r} (which "
                f"ends at byte {end}): tensors must not overlap"
            )
        if t.begin > end:
            after = f"after tensor {previous!r}" if previous is not None else "at the start"
            raise _Corrupt(
                f"bytes {end} to {t.begin} of the data {after} belong to no tensor (the next, "
                f"{name!r}, starts at byte {t.begin}): tensors must follow each other"
            )
        nbytes = _nbytes(name, t)
        if t.end - t.begin != nbytes:
            raise _Corrupt(
                f"tensor {name!r} has shape {list(t.shape)} of {t.dtype}, {nbytes:,} bytes, but "
                f"its data_offsets [{t.begin}, {t.end}] give it {t.end - t.begin:,}"
            )
        end, previous = t.end, name
    if end != data_size:
        raise _Corrupt(
            f"the tensors' data is {end:,} bytes but the file has {data_size:,} after the header"
        )


def _nbytes(name: str, t: _Tensor) -> int:
    """The bytes a tensor's shape and dtype make it, refused beyond 2**64 as in the library
    (whose running product overflows: [2**40, 2**40, 0] is refused, [0, 2**40, 2**40] not)."""
    count = 1
    for n in t.shape:
        count *= n
        if count >= _USIZE:
            break
    bits = count * _DTYPES[t.dtype][0]
    if bits >= _USIZE:
        raise _Corrupt(f"tensor {name!r} has shape {list(t.shape)}, too many elements to count")
    if bits % 8:
        raise _Corrupt(f"tensor {name!r}: {count} elements of {t.dtype} do not fill whole bytes")
    return bits // 8


def _read_tensor(
    f: BufferedReader, path: Path, name: str, t: _Tensor, data_start: int
) -> np.ndarray:
    """One tensor of a safetensors file, read into a new array (see ``read_safetensors``)."""
    stored = np.dtype(_DTYPES[t.dtype][1])
    try:
        array = np.empty(t.shape, dtype=stored)
    except (ValueError, OverflowError) as e:  # NumPy's own limits: 64 dimensions, 2**63 bytes
        raise _Corrupt(f"tensor {name!r} has shape {list(t.shape)}, beyond NumPy ({e})") from None
    except MemoryError:
        raise CheckpointError(
            f"{path}: not enough memory to read tensor {name!r} ({t.end - t.begin:,} bytes)"
        ) from None
    f.seek(data_start + t.begin)
    if f.readinto(array.reshape(-1).view(np.uint8).data) != t.end - t.begin:
        raise _Corrupt(f"tensor {name!r} is cut short")
    if t.dtype != "BF16":
        return array
    try:
        return _bf16_to_f32(array)
    except ValueError as e:  # a float32 array of this shape would pass 2**63 bytes
        raise _Corrupt(f"tensor {name!r} has shape {list(t.shape)}, beyond NumPy ({e})") from None


def _show(value: Any) -> str:
    """A JSON value from a header, shortened for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32, so shifting its 16 bits up converts it exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _unreadable(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable safetensors file ({why}); it is corrupt, or truncated by "
        "an interrupted download or copy: fetch or save it again"
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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a failed write: say which file
            raise OSError(e.errno, e.strerror, os.fspath(path)) from e
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
