"""The safetensors reader's refusals word for word, and the writers' files.

tests/test_hostile_files.py checks that numpylm refuses exactly the files the safetensors
library refuses; these check what each refusal says, since a user reads that message to know
what is wrong. Written for the survivors of a mutation run over ``checkpoint.py``
(docs/reliability.md, "Mutation testing"). Files are built byte by byte here.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from numpylm.io import checkpoint
from numpylm.io.checkpoint import CheckpointError, read_safetensors

SUFFIX = "; it is corrupt, or truncated by an interrupted download or copy: fetch or save it again"


def blob(header: Any, data: bytes = b"", *, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def why(tmp_path: Path, content: bytes, **kw: Any) -> str:
    """Why the reader refuses ``content``: the part of the message between the brackets."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as refused:
        read_safetensors(path, **kw)
    message = str(refused.value)
    head = f"{path} is not a readable safetensors file ("
    assert message.startswith(head) and message.endswith(")" + SUFFIX), message
    return message[len(head) : -len(")" + SUFFIX)]


def entry(dtype: Any, shape: Any, begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_framing(tmp_path: Path) -> None:
    assert why(tmp_path, b"abc") == (
        "the file has 3 bytes, fewer than the 8 that give the header's length"
    )
    assert why(tmp_path, struct.pack("<Q", 100_000_001) + bytes(16)) == (
        "the header claims 100,000,001 bytes, more than the format allows (100,000,000)"
    )
    assert why(tmp_path, struct.pack("<Q", 1000) + bytes(10)) == (
        "the header claims 1,000 bytes, the file has 18 in all"
    )


def test_header_json(tmp_path: Path) -> None:
    assert why(tmp_path, blob(None, raw=b'{"a": \xff}')) == (
        "the header is not UTF-8 text (byte 6 cannot be decoded)"
    )
    assert why(tmp_path, blob(None, raw=b"{x")) == (
        "the header is not valid JSON: Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1)"
    )
    assert why(tmp_path, blob(None, raw=b'{"x": NaN}')) == (
        "the header is not valid JSON: NaN is not JSON (Python accepts it, the format does not)"
    )
    assert why(tmp_path, blob(None, raw=b'{"x": 1e400}')) == (
        "the header is not valid JSON: the number 1e400 is out of range"
    )
    deep = b'{"x": ' + b"[" * 127 + b"]" * 127 + b"}"  # 128 levels with the object
    assert why(tmp_path, blob(None, raw=deep)) == (
        "the header nests arrays and objects deeper than 127"
    )
    assert why(tmp_path, blob(None, raw=b'{"\\ud800": 1}')) == (
        "the header's key '\\ud800' has a lone surrogate escape"
    )
    assert why(tmp_path, blob(None, raw=b'{"__metadata__": {"a": "\\udc00"}}')) == (
        "the header's string '\\udc00' has a lone surrogate escape"
    )
    assert why(tmp_path, blob([1])) == "the header should be a JSON object, it is an array"
    assert why(tmp_path, blob(None, raw=b'{"__metadata__": {}, "__metadata__": {}}')) == (
        "the header has two __metadata__ entries"
    )
    assert why(tmp_path, blob({"__metadata__": {"a": 1}})) == (
        "__metadata__ should map names to strings, it is {'a': 1}"
    )


def test_numbers_beyond_64_bits_are_not_whole_numbers(tmp_path: Path) -> None:
    for number in ("-0", "18446744073709551616", "123456789012345678901"):
        raw = (
            b'{"x": {"dtype": "F32", "shape": [' + number.encode() + b'], "data_offsets": [0, 0]}}'
        )
        assert why(tmp_path, blob(None, raw=raw)).startswith("tensor 'x' has the shape [")
    # the largest whole number below 2**64 is still one (refused later for its size)
    raw = b'{"x": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 0]}}'
    assert why(tmp_path, blob(None, raw=raw)).startswith(
        "tensor 'x' has shape [18446744073709551615]"
    )


def test_tensor_entries(tmp_path: Path) -> None:
    twice = b'{"x": {"dtype": "F32", "dtype": "F32", "shape": [], "data_offsets": [0, 4]}}'
    assert why(tmp_path, blob(None, raw=twice)) == "tensor 'x' gives its dtype twice"
    assert why(tmp_path, blob({"x": {"dtype": "F32", "shape": [2]}})) == (
        "tensor 'x' has no data_offsets: its entry is {'dtype': 'F32', 'shape': [2]}"
    )
    assert why(tmp_path, blob({"x": "F32"})) == (
        "tensor 'x' should have an object with its dtype, shape and data_offsets, it has 'F32'"
    )
    assert why(tmp_path, blob({"x": ["F32", [2]]})).startswith("tensor 'x' should have an object")
    formats = ", ".join(checkpoint._DTYPES)
    assert why(tmp_path, blob({"x": entry("F31", [2], 0, 8)}, bytes(8))) == (
        f"tensor 'x' has the dtype 'F31', which is not one of the format's ({formats})"
    )
    assert why(tmp_path, blob({"x": entry({"F32": 1}, [2], 0, 8)}, bytes(8))).startswith(
        "tensor 'x' has the dtype {'F32': 1}, which"
    )
    for shape in ([-2], [True], "2", [2.0]):
        assert why(tmp_path, blob({"x": entry("F32", shape, 0, 8)}, bytes(8))) == (
            f"tensor 'x' has the shape {shape!r}: a shape is a list of whole numbers from 0"
        )
    for offsets in ([0], [0, 8, 8], [0, -8], "0,8", [0, True]):
        header = {"x": {"dtype": "F32", "shape": [2], "data_offsets": offsets}}
        assert why(tmp_path, blob(header, bytes(8))) == (
            f"tensor 'x' has data_offsets {offsets!r}: they are two byte positions [begin, end] "
            "in the data, whole numbers from 0"
        )


def test_the_other_spellings_of_an_entry_are_read(tmp_path: Path) -> None:
    """serde reads an entry from an array, a dtype from {"F32": null}, and ignores other keys."""
    data = np.array([1.5, -2.0], dtype="<f4").tobytes()
    path = tmp_path / "w.safetensors"
    for x in (
        ["F32", [2], [0, 8]],
        {"dtype": {"F32": None}, "shape": [2], "data_offsets": [0, 8]},
        entry("F32", [2], 0, 8) | {"note": 1},
    ):
        path.write_bytes(blob({"__metadata__": None, "x": x}, data))
        np.testing.assert_array_equal(read_safetensors(path)["x"], [1.5, -2.0])


def test_layout(tmp_path: Path) -> None:
    assert why(tmp_path, blob({"x": entry("F32", [0], 8, 0)}, bytes(8))) == (
        "tensor 'x' ends at byte 0, before it begins (8)"
    )
    overlap = {"x": entry("F32", [2], 0, 8), "y": entry("F32", [1], 4, 8)}
    assert why(tmp_path, blob(overlap, bytes(8))) == (
        "tensor 'y' starts at byte 4, inside tensor 'x' (which ends at byte 8): tensors must not "
        "overlap"
    )
    assert why(tmp_path, blob({"x": entry("F32", [1], 4, 8)}, bytes(8))) == (
        "bytes 0 to 4 of the data at the start belong to no tensor (the next, 'x', starts at "
        "byte 4): tensors must follow each other"
    )
    gap = {"x": entry("F32", [1], 0, 4), "y": entry("F32", [1], 8, 12)}
    assert why(tmp_path, blob(gap, bytes(12))) == (
        "bytes 4 to 8 of the data after tensor 'x' belong to no tensor (the next, 'y', starts at "
        "byte 8): tensors must follow each other"
    )
    assert why(tmp_path, blob({"x": entry("F32", [3], 0, 8)}, bytes(8))) == (
        "tensor 'x' has shape [3] of F32, 12 bytes, but its data_offsets [0, 8] give it 8"
    )
    assert why(tmp_path, blob({"x": entry("F32", [2], 0, 8)}, bytes(12))) == (
        "the tensors' data is 8 bytes but the file has 12 after the header"
    )
    big = {"x": entry("U8", [2**40, 2**40, 2**40], 0, 0)}
    assert why(tmp_path, blob(big)) == (
        f"tensor 'x' has shape {[2**40] * 3}, too many elements to count"
    )
    assert why(tmp_path, blob({"x": entry("F32", [2**62], 0, 0)})) == (
        f"tensor 'x' has shape {[2**62]}, too many elements to count"
    )
    assert why(tmp_path, blob({"x": entry("F4", [3], 0, 1)}, bytes(1))) == (
        "tensor 'x': 3 elements of F4 do not fill whole bytes"
    )
    # ranges sorted by where they start, whatever the header's order
    path = tmp_path / "ok.safetensors"
    data = np.array([7], "<i4").tobytes() + np.array([9], "<i2").tobytes()
    path.write_bytes(blob({"b": entry("I16", [1], 4, 6), "a": entry("I32", [1], 0, 4)}, data))
    read = read_safetensors(path)
    assert read["a"].tolist() == [7] and read["b"].tolist() == [9]


def test_empty_tensors_and_zero_sized_shapes(tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    path.write_bytes(blob({"x": entry("F32", [0, 3], 0, 0), "y": entry("U8", [], 0, 1)}, b"\x05"))
    read = read_safetensors(path)
    assert read["x"].shape == (0, 3) and read["y"].shape == () and int(read["y"]) == 5


def test_what_numpy_cannot_hold(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(
        blob({"x": entry("F8_E4M3", [2], 0, 2), "y": entry("U8", [1], 2, 3)}, bytes(3))
    )
    with pytest.raises(CheckpointError) as refused:
        read_safetensors(path)
    assert str(refused.value) == (
        f"{path}: tensor 'x' is stored as F8_E4M3, which numpylm cannot read (NumPy has no such "
        "type; numpylm reads F16, BF16, F32, F64 and the integer and BOOL types). Convert it to "
        "float16 or float32 where the file was made"
    )
    assert list(read_safetensors(path, skip=["x"])) == ["y"]  # a skipped tensor is not judged
    shape = [1] * 65
    assert why(tmp_path, blob({"x": entry("U8", shape, 0, 1)}, bytes(1))).startswith(
        f"tensor 'x' has shape {shape}, beyond NumPy ("
    )


def test_bf16_is_widened_exactly(tmp_path: Path) -> None:
    values = np.array([1.5, -2.25, 3.0e38, 1.0e-3], dtype=np.float32)
    top = (values.view(np.uint32) >> 16).astype("<u2")  # bfloat16: the top half
    path = tmp_path / "b.safetensors"
    path.write_bytes(blob({"x": entry("BF16", [4], 0, 8)}, top.tobytes()))
    read = read_safetensors(path)["x"]
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read.view(np.uint32), top.astype(np.uint32) << 16)


def test_a_path_that_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a directory is refused by regular_file, before open() (which would wait on a FIFO)
    with pytest.raises(CheckpointError) as refused:
        read_safetensors(tmp_path)
    assert str(refused.value) == (
        f"{tmp_path.name} {str(tmp_path)!r} is a directory, not a file: numpylm reads a file "
        "whole and sizes it first, so give the path of a regular file"
    )
    # a regular file open() refuses (chmod 000 for a user who is not root)
    path = tmp_path / "w.safetensors"
    checkpoint.write_safetensors(path, {"x": np.zeros(2, np.float32)})

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)
    with pytest.raises(CheckpointError) as refused:
        read_safetensors(path)
    assert str(refused.value) == (
        f"{path} could not be read (Permission denied): check that it is a file you can read"
    )


# ------------------------------------------------------------------------------------------------
# Writing


def test_written_files_are_readable_by_all_and_leave_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.json"
    checkpoint.write_json(path, {"b": "é", "a": [1, 2]})
    assert path.read_bytes() == '{\n  "b": "é",\n  "a": [\n    1,\n    2\n  ]\n}\n'.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["c.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.json"
    path.write_text("old")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["c.json"]


def test_safetensors_written_for_torch(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    checkpoint.write_safetensors(path, {"x": x.T}, {"note": "n"})  # not contiguous
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert json.loads(raw[8 : 8 + n])["__metadata__"] == {"format": "pt", "note": "n"}
    np.testing.assert_array_equal(read_safetensors(path)["x"], x.T)
    checkpoint.write_safetensors(path, {"x": x})
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert json.loads(path.read_bytes()[8 : 8 + n])["__metadata__"] == {"format": "pt"}


# ------------------------------------------------------------------------------------------------
# Directories and JSON files


def test_json_files_name_themselves(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(CheckpointError) as refused:
        checkpoint.read_json(path)
    assert str(refused.value) == (
        f"{path} is not UTF-8 text (byte 0xe9 at offset 7 cannot be decoded), so it is not a "
        "JSON file: the file is corrupt or is another kind of file saved under this name"
    )
    path.write_text("[" * 100_000)
    with pytest.raises(
        CheckpointError,
        match=r"nests JSON arrays or objects too deeply for "
        r"Python's parser \(about \d+ levels\); the file is corrupt$",
    ):
        checkpoint.read_json(path)
    path.write_text('{"a": ')
    with pytest.raises(CheckpointError) as refused:
        checkpoint.read_json(path)
    assert str(refused.value) == (
        f"{path} is not valid JSON (Expecting value: line 1 column 7 (char 6)); the file is corrupt"
    )
    for value, kind in [
        ([], "an array"),
        ("s", "a string"),
        (True, "a boolean"),
        (1, "an integer"),
        (1.5, "a number with a decimal point"),
        (None, "null"),
    ]:
        path.write_text(json.dumps(value))
        with pytest.raises(CheckpointError) as refused:
            checkpoint.read_json(path)
        assert str(refused.value) == f"{path} should hold a JSON object ({{...}}), found {kind}"


def test_what_looks_like_a_path(tmp_path: Path) -> None:
    for name in ("./gpt2", "~/m", "/m", "a/b/c", Path("gpt2"), str(tmp_path)):
        assert checkpoint.looks_like_path(name), name
    for name in ("gpt2", "openai-community/gpt2"):
        assert not checkpoint.looks_like_path(name), name


def test_resolve_names_a_missing_or_wrong_local_path(tmp_path: Path) -> None:
    assert checkpoint.resolve(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError) as refused:
        checkpoint.resolve(tmp_path / "absent")
    assert (
        str(refused.value) == f"no model directory at {str(tmp_path / 'absent')!r}: check the path"
    )
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileNotFoundError) as refused:
        checkpoint.resolve(tmp_path / "f")
    assert str(refused.value) == (
        f"{str(tmp_path / 'f')!r} is a file; give the directory that holds config.json and "
        "model.safetensors"
    )


def test_weight_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as refused:
        checkpoint.weight_files(tmp_path)
    assert str(refused.value) == (
        f"{tmp_path} has no model.safetensors: it is not a model directory (one holds "
        "config.json and model.safetensors, as save_pretrained writes them)"
    )
    (tmp_path / "tf_model.h5").write_bytes(b"")
    with pytest.raises(CheckpointError) as refused:
        checkpoint.weight_files(tmp_path)
    assert str(refused.value).startswith(
        f"{tmp_path} has tf_model.h5 but no model.safetensors. numpylm does not open pickle "
        "files, since loading one can run arbitrary code. Convert it once, where you trust the "
        "file, with transformers:\n"
    )
    assert str(refused.value).endswith(
        f"M.from_pretrained('{tmp_path}').save_pretrained('{tmp_path}')\""
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert checkpoint.weight_files(tmp_path) == [tmp_path / "model.safetensors"]


def index(tmp_path: Path, weight_map: Any) -> Path:
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps({"weight_map": weight_map}))
    return path


def test_shards(tmp_path: Path) -> None:
    for name in ("b.safetensors", "a.safetensors"):
        (tmp_path / name).write_bytes(b"")
    path = index(tmp_path, {"x": "b.safetensors", "y": "a.safetensors", "z": "b.safetensors"})
    assert checkpoint.weight_files(tmp_path) == [
        tmp_path / "a.safetensors",
        tmp_path / "b.safetensors",
    ]
    for weight_map, found in [({}, "an empty object"), ([], "an array"), (None, "null")]:
        index(tmp_path, weight_map)
        with pytest.raises(CheckpointError) as refused:
            checkpoint.weight_files(tmp_path)
        assert str(refused.value) == (
            f"{path} should have a weight_map: an object giving each tensor's shard file, found "
            f"{found}; the index is corrupt: fetch or save the model again"
        )
    for shard in ("", ".", "..", "../a.safetensors", 3):
        index(tmp_path, {"x": shard})
        with pytest.raises(CheckpointError) as refused:
            checkpoint.weight_files(tmp_path)
        assert str(refused.value) == (
            f"{path}: weight_map gives tensor 'x' the shard {shard!r}, which is not the name of a "
            "file in the model directory; the index is corrupt"
        )
    index(tmp_path, {"x": "a.safetensors", "y": "c.safetensors"})
    with pytest.raises(CheckpointError) as refused:
        checkpoint.weight_files(tmp_path)
    assert str(refused.value) == (
        f"{path} names the shard c.safetensors, which is missing from {tmp_path}: the download "
        "or copy is incomplete; fetch or save the model again"
    )


def test_boundaries_of_the_framing(tmp_path: Path) -> None:
    assert why(tmp_path, bytes(8)) == (  # 8 bytes: a header length of 0, so no JSON
        "the header is not valid JSON: Expecting value: line 1 column 1 (char 0)"
    )
    assert why(tmp_path, struct.pack("<Q", 100_000_000) + bytes(8)) == (
        "the header claims 100,000,000 bytes, the file has 16 in all"
    )
    assert why(tmp_path, struct.pack("<Q", 12) + bytes(10)) == (
        "the header claims 12 bytes, the file has 18 in all"
    )
    assert why(tmp_path, blob(None, raw=b"[" * 100_000)) == (
        "the header is not valid JSON: it nests too deeply"
    )


def test_the_depth_limit_is_127_levels(tmp_path: Path) -> None:
    for outer in (b'{"x": ', b'[{"x": '):
        close = b"}" if outer.startswith(b"{") else b"}]"
        levels = outer.count(b"{") + outer.count(b"[")
        ok = outer + b"[" * (127 - levels) + b"]" * (127 - levels) + close
        assert "deeper" not in why(tmp_path, blob(None, raw=ok))
        deep = outer + b"[" * (128 - levels) + b"]" * (128 - levels) + close
        assert why(tmp_path, blob(None, raw=deep)) == (
            "the header nests arrays and objects deeper than 127"
        )


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ("-9223372036854775808", "-9223372036854775808"),  # -2**63: still an integer
        ("-9223372036854775809", "-9.223372036854776e+18"),  # beyond 64 bits: a float
        ("18446744073709551616", "1.8446744073709552e+19"),  # 2**64
        ("-0", "-0.0"),
    ],
)
def test_integers_beyond_64_bits_are_read_as_floats(
    tmp_path: Path, number: str, shown: str
) -> None:
    raw = b'{"x": {"dtype": "U8", "shape": [' + number.encode() + b'], "data_offsets": [0, 0]}}'
    assert why(tmp_path, blob(None, raw=raw)) == (
        f"tensor 'x' has the shape [{shown}]: a shape is a list of whole numbers from 0"
    )


@pytest.mark.parametrize("shape", [[2**61], [2**32, 2**32, 0]])
def test_counts_that_reach_2_to_the_64_are_refused(tmp_path: Path, shape: list[int]) -> None:
    """As in the library, whose running product overflows at 2**64 bits or elements, even
    when a later 0 would bring it back."""
    assert why(tmp_path, blob({"x": entry("U8", shape, 0, 0)})) == (
        f"tensor 'x' has shape {shape}, too many elements to count"
    )


@pytest.mark.parametrize(("n", "shown"), [(78, "'" + "s" * 78 + "'"), (79, "'" + "s" * 76 + "...")])
def test_long_values_are_shortened_to_80_characters(tmp_path: Path, n: int, shown: str) -> None:
    assert why(tmp_path, blob({"x": "s" * n})) == (
        f"tensor 'x' should have an object with its dtype, shape and data_offsets, it has {shown}"
    )


def test_writes_create_missing_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.json"
    checkpoint.write_json(path, {"k": 1})
    assert json.loads(path.read_text()) == {"k": 1}


def test_the_pickle_message_gives_the_conversion_line(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError) as refused:
        checkpoint.weight_files(tmp_path)
    assert str(refused.value).splitlines()[1] == (
        '  python -c "from transformers import GPT2LMHeadModel as M; '
        f"M.from_pretrained('{tmp_path}').save_pretrained('{tmp_path}')\""
    )


def test_more_messages_in_full(tmp_path: Path) -> None:
    two = {"x": entry("U8", [1], 0, 1), "y": entry("U8", [3], 1, 3)}
    assert why(tmp_path, blob(two, bytes(3))) == (
        "tensor 'y' has shape [3] of U8, 3 bytes, but its data_offsets [1, 3] give it 2"
    )
    number = "1" + "0" * 400
    assert why(tmp_path, blob(None, raw=b'{"x": ' + number.encode() + b".5}")) == (
        f"the header is not valid JSON: the number {number[:30]} is out of range"
    )


# ------------------------------------------------------------------------------------------------
# The Hub (offline: huggingface_hub's snapshot_download stood in for)


def hub_error(cls: type[Exception]) -> Exception:
    """An error of huggingface_hub's without the HTTP response its constructor wants."""
    error = cls.__new__(cls)
    Exception.__init__(error, "the Hub said no")
    return error


def test_a_hub_id_is_fetched_with_the_files_numpylm_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    asked: list[tuple[str, Any]] = []

    def snapshot_download(repo_id: str, **kw: Any) -> str:
        asked.append((repo_id, kw))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert checkpoint.resolve("openai-community/gpt2") == tmp_path
    assert asked == [("openai-community/gpt2", {"allow_patterns": list(checkpoint.HUB_FILES)})]


def test_each_hub_failure_is_a_checkpoint_error_naming_the_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub
    from huggingface_hub import errors

    cases: list[tuple[Exception, str]] = [
        (
            hub_error(errors.GatedRepoError),
            "the Hub model 'org/m' is gated: accept its licence on the Hub and log in with "
            "`huggingface-cli login`",
        ),
        (
            hub_error(errors.RepositoryNotFoundError),
            "no model 'org/m' on the Hugging Face Hub and no local directory of that name: check "
            "the spelling (GPT-2 ids: gpt2, gpt2-medium, gpt2-large, gpt2-xl)",
        ),
        (
            errors.LocalEntryNotFoundError("not cached"),
            "could not fetch 'org/m': it is not in the local Hugging Face cache and the Hub could "
            "not be reached (offline, or HF_HUB_OFFLINE=1). Connect once to download it, or pass "
            "the path of a local model directory",
        ),
        (
            hub_error(errors.HfHubHTTPError),
            "could not fetch 'org/m' from the Hugging Face Hub: the Hub said no",
        ),
        (OSError("disk"), "could not fetch 'org/m' from the Hugging Face Hub: disk"),
        (ValueError("bad id"), "could not fetch 'org/m' from the Hugging Face Hub: bad id"),
    ]
    for error, message in cases:

        def snapshot_download(repo_id: str, error: Exception = error, **kw: Any) -> str:
            raise error

        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
        with pytest.raises(CheckpointError) as refused:
            checkpoint.resolve("org/m")
        assert str(refused.value) == message
        assert refused.value.__cause__ is error
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # anything else is not the Hub's: not hidden
        checkpoint.resolve("org/m")


# ------------------------------------------------------------------------------------------------
# What is not a regular file, and the temporary file of a write


def test_regular_file_says_what_a_path_is(tmp_path: Path) -> None:
    import socket

    from numpylm.io.checkpoint import regular_file

    (tmp_path / "f.bin").write_bytes(b"12345")
    assert regular_file(tmp_path / "f.bin", "the data file") == 5
    with pytest.raises(FileNotFoundError) as missing:
        regular_file(tmp_path / "gone", "the data file")
    assert str(missing.value) == f"no the data file at {str(tmp_path / 'gone')!r}: check the path"
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as missing:
        regular_file(tmp_path / "link", "vocab.json", "hint")
    assert str(missing.value) == (
        f"vocab.json {str(tmp_path / 'link')!r} is a symbolic link to "
        f"{str(tmp_path / 'nowhere')!r}, which does not exist"
    )
    with pytest.raises(CheckpointError) as refused:
        regular_file(tmp_path / "f.bin" / "x", "x")  # a path through a file
    assert (
        str(refused.value) == f"x {str(tmp_path / 'f.bin' / 'x')!r} cannot be read: Not a directory"
    )
    os.mkfifo(tmp_path / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        for path, kind in [
            (tmp_path, "a directory"),
            (tmp_path / "fifo", "a named pipe (FIFO)"),
            (Path("/dev/null"), "a device"),
            (tmp_path / "sock", "a socket"),
        ]:
            with pytest.raises(CheckpointError) as refused:
                regular_file(path, "w")
            assert str(refused.value) == (
                f"w {str(path)!r} is {kind}, not a file: numpylm reads a file whole and sizes "
                "it first, so give the path of a regular file"
            )
    finally:
        server.close()


def test_each_reader_names_the_file_that_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "c.json").mkdir()
    with pytest.raises(CheckpointError, match=r"^c\.json '.*' is a directory, not a file"):
        checkpoint.read_json(tmp_path / "c.json")
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"^model\.safetensors '.*' is a directory"):
        checkpoint.weight_files(tmp_path)


def test_the_temporary_file_is_one_a_run_recognises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed while writing leaves ``.NAME.XXXXXXXX.tmp`` beside NAME: the run
    directory counts it as numpylm's by that name (``runs._temporary_of``)."""
    from numpylm.training import runs

    path = tmp_path / "config.json"
    seen: list[Path] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        seen.append(Path(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    checkpoint.write_json(path, {"a": "é"})
    assert path.read_text(encoding="utf-8") == '{\n  "a": "é"\n}\n'
    assert len(seen) == 1 and seen[0].parent == tmp_path
    seen[0].write_text("left by a crash")
    assert runs._temporary_of(seen[0]) == "config.json"


def test_a_failed_write_names_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")  # as a write to a full disk: no filename

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as failed:
        checkpoint.atomic_write_bytes(path, b"new")
    assert (failed.value.errno, failed.value.strerror) == (28, "No space left on device")
    assert failed.value.filename == str(path)
    assert os.listdir(tmp_path) == ["w.bin"] and path.read_bytes() == b"old"
    named = OSError(5, "Input/output error", "elsewhere")
    for error in (named, KeyboardInterrupt()):

        def fail(fd: int, error: BaseException = error) -> None:
            raise error

        monkeypatch.setattr(os, "fsync", fail)
        with pytest.raises(BaseException) as raised:
            checkpoint.atomic_write_bytes(path, b"new")
        assert raised.value is error  # already names its file, or not an OSError: as it is
        assert os.listdir(tmp_path) == ["w.bin"]
