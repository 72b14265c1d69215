"""Hostile files: what numpylm does with broken or malicious model and tokenizer files.

The safetensors reader is held to the ``safetensors`` library itself (pinned in the test
extra), the oracle: among files whose dtypes the library's NumPy loader reads, numpylm refuses
exactly the files the library refuses, and where both read a file they give the same arrays.
A fuzz test mutates valid files to look for a disagreement. Every refusal is a
``CheckpointError``; no other exception may escape. The tokenizer files (``vocab.json``,
``merges.txt``) and ``config.json`` get the same treatment, through the API and the command
line, where a broken file is one line on stderr that names it, never a traceback.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpylm import GPT, GPTConfig, Tokenizer, load
from numpylm.cli import main
from numpylm.io.checkpoint import CheckpointError, read_safetensors
from numpylm.tokens import tokenizer as tokenizer_module

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# The dtypes the library's NumPy loader reads, as numpylm reads them.
NUMPY_DTYPES = {
    "F16": "<f2", "F32": "<f4", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4",
    "I64": "<i8", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?",
}  # fmt: skip


def raw_file(
    path: Path, header: Any, data: bytes = b"", *, header_bytes: bytes | None = None
) -> Path:
    """A safetensors file written by hand: the 8-byte header length, the header, the data."""
    text = header_bytes if header_bytes is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def valid_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((2, 3)).astype(np.float32),
        "b": np.arange(4, dtype=np.int64),
        "c": rng.standard_normal(5).astype(np.float16),
    }


def library(path: Path) -> dict[str, np.ndarray] | None:
    """What the library reads from ``path``, or None if it refuses the file."""
    try:
        return dict(safetensors_numpy.load_file(str(path)))
    except Exception:  # SafetensorError, or a JSON or dtype error: a refusal
        return None


def numpylm(path: Path) -> dict[str, np.ndarray] | None:
    """What numpylm reads, or None if it refuses; any error but CheckpointError fails."""
    try:
        return read_safetensors(path)
    except CheckpointError:
        return None


def agree(path: Path) -> None:
    """numpylm and the library accept and refuse the same file, and read the same arrays.

    The library's NumPy loader cannot read BF16, which numpylm reads: a file with BF16 in its
    header is judged by the library on the same file relabelled F16 (the same width, so the
    same header rules), and its arrays are not compared."""
    blob = path.read_bytes()
    ours = numpylm(path)
    if b'"BF16"' in blob:
        relabelled = path.with_suffix(".f16.safetensors")
        relabelled.write_bytes(blob.replace(b'"BF16"', b'"F16" '))  # the same length
        assert (ours is None) == (library(relabelled) is None), blob[:300]
        return
    theirs = library(path)
    assert (ours is None) == (theirs is None), (
        f"numpylm {'refused' if ours is None else 'read'} {path.read_bytes()[:300]!r}, "
        f"the library {'refused' if theirs is None else 'read'} it"
    )
    if ours is not None and theirs is not None:
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert ours[name].dtype == theirs[name].dtype
            np.testing.assert_array_equal(ours[name], theirs[name])


def header_of(tensors: dict[str, np.ndarray]) -> tuple[dict[str, Any], bytes]:
    """The header and data section the library writes for ``tensors``."""
    blob = safetensors_numpy.save(tensors)
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


# --- safetensors: each rule by hand --------------------------------------------------------


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


CASES: dict[str, tuple[Any, bytes]] = {
    "valid": ({"x": entry("F32", [2], 0, 8)}, bytes(8)),
    "overlapping tensors": ({"x": entry("F32", [2], 0, 8), "y": entry("F32", [1], 4, 8)}, bytes(8)),
    "a negative offset": ({"x": entry("F32", [2], -8, 0)}, bytes(8)),
    "an offset past the end": ({"x": entry("F32", [2], 8, 16)}, bytes(8)),
    "F32 relabelled I32": ({"x": entry("I32", [2], 0, 8)}, bytes(8)),
    "F32 relabelled F64": ({"x": entry("F64", [2], 0, 8)}, bytes(8)),
    "an unknown dtype": ({"x": entry("F31", [2], 0, 8)}, bytes(8)),
    "a shape that disagrees with its bytes": ({"x": entry("F32", [3], 0, 8)}, bytes(8)),
    "a header that is a list": ([entry("F32", [2], 0, 8)], bytes(8)),
    "a gap between tensors": (
        {"x": entry("F32", [1], 0, 4), "y": entry("F32", [1], 8, 12)},
        bytes(12),
    ),
    "bytes after the last tensor": ({"x": entry("F32", [2], 0, 8)}, bytes(12)),
    "a tensor that ends before it begins": ({"x": entry("F32", [0], 8, 0)}, bytes(8)),
    "a float shape": ({"x": entry("F32", [2.0], 0, 8)}, bytes(8)),
    "a negative shape": ({"x": entry("F32", [-2], 0, 8)}, bytes(8)),
    "a missing field": ({"x": {"dtype": "F32", "shape": [2]}}, bytes(8)),
    "metadata that is not strings": (
        {"__metadata__": {"a": 1}, "x": entry("F32", [2], 0, 8)},
        bytes(8),
    ),
    "string metadata": ({"__metadata__": {"a": "b"}, "x": entry("F32", [2], 0, 8)}, bytes(8)),
    "a tensor entry that is a string": ({"x": "F32"}, bytes(8)),
    "empty": ({}, b""),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_rule_as_the_library_has_it(case: str, tmp_path: Path) -> None:
    header, data = CASES[case]
    agree(raw_file(tmp_path / "m.safetensors", header, data))


@pytest.mark.parametrize(
    "blob",
    [
        b"",  # empty file
        b"\x05\x00\x00",  # shorter than the length
        struct.pack("<Q", 10**12) + b"{}",  # a header longer than the file
        struct.pack("<Q", 200_000_000) + b"{}",  # a header longer than the format allows
        struct.pack("<Q", 4) + b"\xff\xfe{}",  # not UTF-8
        struct.pack("<Q", 2) + b"[]",
        struct.pack("<Q", 7) + b"{'a':1}",  # not JSON
        struct.pack("<Q", 3) + b"nul",
    ],
    ids=["empty", "short", "long header", "huge header", "not utf-8", "list", "not json", "cut"],
)
def test_broken_framing_is_refused_by_both(blob: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob)
    assert library(path) is None
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        read_safetensors(path)


def test_the_header_limit_is_the_formats(tmp_path: Path) -> None:
    """A header over 100,000,000 bytes is refused for its length alone (the file need not be
    that long), before anything is read."""
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 100_000_001) + b"{}")
    with pytest.raises(CheckpointError, match=r"more than the format allows \(100,000,000\)"):
        read_safetensors(path)


def test_a_deeply_nested_header_is_a_checkpoint_error(tmp_path: Path) -> None:
    header = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = raw_file(tmp_path / "m.safetensors", None, header_bytes=header)
    assert library(path) is None
    with pytest.raises(CheckpointError, match="nests"):
        read_safetensors(path)


def test_a_dtype_numpy_lacks_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    path = raw_file(tmp_path / "m.safetensors", {"w.8": entry("F8_E4M3", [4], 0, 4)}, bytes(4))
    with pytest.raises(CheckpointError, match=r"tensor 'w\.8' is stored as F8_E4M3"):
        read_safetensors(path)
    assert read_safetensors(path, skip=["w.8"]) == {}  # a skipped tensor is never read


def test_bf16_obeys_the_same_header_rules(tmp_path: Path) -> None:
    """The NumPy loader cannot read BF16; F16 has the same width, so a BF16 header is valid
    exactly when the same header relabelled F16 is, and then it reads as float32, exactly."""
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)  # exact in bfloat16
    bits = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    good = raw_file(tmp_path / "good.safetensors", {"x": entry("BF16", [3], 0, 6)}, bits)
    np.testing.assert_array_equal(read_safetensors(good)["x"], values)
    for name, (header, data) in CASES.items():
        text = json.dumps(header).replace('"F32"', '"BF16"').replace('"I32"', '"BF16"')
        as_f16 = raw_file(
            tmp_path / "f16.safetensors",
            None,
            data,
            header_bytes=text.replace("BF16", "F16").encode(),
        )
        as_bf16 = raw_file(tmp_path / "bf16.safetensors", None, data, header_bytes=text.encode())
        assert (numpylm(as_bf16) is None) == (library(as_f16) is None), name


def test_a_model_refuses_weights_that_are_not_floats(tmp_path: Path) -> None:
    """The file may say I32 over float32 bytes (the library reads it so too); a model's weight
    is never an integer, so loading the model refuses it, naming the tensor."""
    directory = model_dir(tmp_path)
    path = directory / "model.safetensors"
    header, data = header_of(read_safetensors(path))
    name = sorted(k for k in header if k != "__metadata__")[0]
    header[name]["dtype"] = "I32"
    raw_file(path, header, data)
    assert library(path) is not None  # a valid file ...
    with pytest.raises(
        CheckpointError, match=f"tensor {name.removeprefix('transformer.')!r} is stored as int32"
    ):
        GPT.from_pretrained(directory)  # ... but not a model


# --- safetensors: the fuzz --------------------------------------------------------------------


def mutate_header(header: dict[str, Any], draw: Any) -> Any:
    """One change to a valid header, of the kinds a corrupt or crafted file has."""
    names = sorted(k for k in header if k != "__metadata__")
    name = draw(st.sampled_from(names))
    kind = draw(st.sampled_from(["offset", "dtype", "shape", "drop", "field", "rename"]))
    h = json.loads(json.dumps(header))
    t = h[name]
    if kind == "offset":
        i = draw(st.integers(0, 1))
        t["data_offsets"][i] += draw(st.sampled_from([-9, -4, -2, -1, 1, 2, 4, 8, 2**40]))
    elif kind == "dtype":
        t["dtype"] = draw(st.sampled_from([*NUMPY_DTYPES, "BF16", "F8_E5M2", "Q4", "f32", 32]))
    elif kind == "shape":
        t["shape"] = draw(
            st.lists(st.one_of(st.integers(-2, 6), st.just(2**63), st.just(1.5)), max_size=3)
        )
    elif kind == "drop":
        del t[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))]
    elif kind == "field":
        key = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        t[key] = draw(st.sampled_from([None, "x", {}, [], [1, 2, 3], True, 3.5]))
    else:
        h[draw(st.sampled_from(["__metadata__", "", names[0]]))] = t
    return h


@FUZZ
@given(st.data())
def test_fuzzed_headers_agree_with_the_library(tmp_path: Path, data: st.DataObject) -> None:
    header, blob = header_of(valid_tensors())
    changed = mutate_header(header, data.draw)
    agree(raw_file(tmp_path / "m.safetensors", changed, blob))


@FUZZ
@given(st.data())
def test_fuzzed_bytes_agree_with_the_library(tmp_path: Path, data: st.DataObject) -> None:
    blob = bytearray(safetensors_numpy.save(valid_tensors()))
    kind = data.draw(st.sampled_from(["flip", "truncate", "append", "length"]))
    if kind == "flip":  # any byte, header or data
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        del blob[data.draw(st.integers(0, len(blob) - 1)) :]
    elif kind == "append":
        blob += bytes(data.draw(st.integers(1, 16)))
    else:  # the header's length
        n = struct.unpack("<Q", blob[:8])[0] + data.draw(st.integers(-8, 8))
        blob[:8] = struct.pack("<Q", max(n, 0))
    path = tmp_path / "m.safetensors"
    path.write_bytes(bytes(blob))
    agree(path)


# --- config.json ---------------------------------------------------------------------------


def model_dir(tmp_path: Path) -> Path:
    """A tiny model with the built-in tokenizer: a folder ``numpylm generate --model`` reads."""
    _, tokenizer = load()
    directory = tmp_path / "m"
    GPT(
        GPTConfig(vocab_size=tokenizer.n_vocab, n_ctx=16, n_layer=1, n_head=2, n_embd=8)
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def cli_error(directory: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The one line ``numpylm generate --model directory`` prints on stderr, after exit 1."""
    assert main(["generate", "--model", str(directory), "hi", "-n", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("numpylm: error:"), err
    return err[0]


@pytest.mark.parametrize("value", [1.5, "2", True, -1, 0, None])
def test_config_numbers_are_never_coerced(
    value: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = model_dir(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "n_layer": value}))
    with pytest.raises(CheckpointError, match=r"config\.json: n_layer must be a positive integer"):
        GPT.from_pretrained(directory)
    assert "n_layer must be a positive integer" in cli_error(directory, capsys)


# --- tokenizer files -------------------------------------------------------------------------


def tokenizer_dir(
    tmp_path: Path, vocab: Any = None, merges: str | None = None, raw_vocab: bytes | None = None
) -> Path:
    """The built-in model's files with ``vocab.json`` and/or ``merges.txt`` replaced."""
    directory = model_dir(tmp_path)
    if raw_vocab is not None:
        (directory / "vocab.json").write_bytes(raw_vocab)
    elif vocab is not None:
        (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    if merges is not None:
        (directory / "merges.txt").write_text(merges, encoding="utf-8")
    return directory


def files(tmp_path: Path) -> tuple[dict[str, int], str]:
    directory = model_dir(tmp_path / "source")
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    return vocab, (directory / "merges.txt").read_text(encoding="utf-8")


def broken_tokenizers(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    vocab, merges = files(tmp_path)
    first, second = list(vocab)[:2]
    return {
        "a list": (
            tokenizer_dir(tmp_path / "1", vocab=list(vocab)),
            r"vocab\.json should hold a JSON object",
        ),
        "a shared id": (
            tokenizer_dir(tmp_path / "2", vocab={**vocab, second: vocab[first]}),
            "share the id",
        ),
        "a negative id": (tokenizer_dir(tmp_path / "3", vocab={**vocab, first: -1}), "negative id"),
        "a float id": (tokenizer_dir(tmp_path / "4", vocab={**vocab, first: 0.5}), "whole numbers"),
        "deep nesting": (
            tokenizer_dir(tmp_path / "5", raw_vocab=b"[" * 100_000 + b"]" * 100_000),
            "too deeply",
        ),
        "not UTF-8": (tokenizer_dir(tmp_path / "6", raw_vocab=b'{"\xff": 0}'), "not UTF-8"),
        "not JSON": (tokenizer_dir(tmp_path / "7", raw_vocab=b'{"a": 0,'), "not valid JSON"),
        "a bad merge line": (
            tokenizer_dir(tmp_path / "8", merges=merges + "a b c\n"),
            r"merges\.txt, line",
        ),
        "a merge too many": (
            tokenizer_dir(tmp_path / "9", merges=merges + "Ġ Ġ\n"),
            "do not belong together",
        ),
    }


def test_broken_tokenizer_files_are_checkpoint_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (directory, message) in broken_tokenizers(tmp_path).items():
        with pytest.raises(CheckpointError, match=message):
            Tokenizer.from_pretrained(directory)
        line = cli_error(directory, capsys)
        assert re.search(message, line) and str(directory) in line, (name, line)


def test_a_weight_map_that_is_a_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = model_dir(tmp_path)
    (directory / "model.safetensors").rename(directory / "model-00001.safetensors")
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": ["model-00001.safetensors"]})
    )
    with pytest.raises(CheckpointError, match="should have a weight_map"):
        GPT.from_pretrained(directory)
    assert "model.safetensors.index.json" in cli_error(directory, capsys)


def test_non_utf8_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = model_dir(tmp_path)
    (directory / "config.json").write_bytes(b'{"n_layer": "\xe9"}')
    with pytest.raises(CheckpointError, match=r"config\.json is not UTF-8"):
        GPT.from_pretrained(directory)
    assert "config.json is not UTF-8" in cli_error(directory, capsys)


@FUZZ
@given(st.data())
def test_fuzzed_tokenizer_files(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A mutated vocab.json or merges.txt loads (and then round-trips text) or is a
    CheckpointError; tiktoken never gets the chance to panic."""
    vocab, merges = SMALL
    tokens = list(vocab)
    kind = data.draw(st.sampled_from(["id", "token", "drop", "line", "swap", "bytes"]))
    vocab, lines = dict(vocab), merges.splitlines()
    if kind == "id":
        vocab[data.draw(st.sampled_from(tokens))] = data.draw(
            st.sampled_from([-1, 0, 5, 278, 279, 280, 10**9, 1.0, "7", None, True])
        )
    elif kind == "token":
        token = data.draw(st.sampled_from(tokens))
        vocab[data.draw(st.text(max_size=3))] = vocab.pop(token)
    elif kind == "drop":
        del vocab[data.draw(st.sampled_from(tokens))]
    elif kind == "line":
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = data.draw(
            st.sampled_from(["", "a", "a b c", "Ġ Ġ", " x", lines[0], "\u0100 \u0101"])
        )
    elif kind == "swap":
        i, j = data.draw(st.integers(1, len(lines) - 1)), data.draw(st.integers(1, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    directory = tmp_path_factory.mktemp("tok")
    text = json.dumps(vocab).encode()
    if kind == "bytes":
        i = data.draw(st.integers(0, len(text) - 1))
        text = text[:i] + bytes([data.draw(st.integers(0, 255))]) + text[i + 1 :]
    (directory / "vocab.json").write_bytes(text)
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        tokenizer = Tokenizer.from_pretrained(directory)
    except CheckpointError:
        return
    sample = "to be, or not to be: \u00e9t\u00e9 \U0001f600\n"
    assert tokenizer.decode(tokenizer.encode(sample)) == sample


def _small_tokenizer_files() -> tuple[dict[str, int], str]:
    from numpylm import train_bpe

    tokenizer = train_bpe("to be, or not to be: that is the question. " * 20, vocab_size=280)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        vocab = json.loads((Path(d) / "vocab.json").read_text(encoding="utf-8"))
        return vocab, (Path(d) / "merges.txt").read_text(encoding="utf-8")


SMALL = _small_tokenizer_files()
BUILTIN_TOKENIZER = load()[1]


# --- ids in, text out ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        ([3.7], TypeError, r"token ids are integers, got float 3\.7"),
        (-1, TypeError, "wrap one id in a list"),
        ([-1], ValueError, "token id -1 is not in the vocabulary"),
        ([2048], ValueError, r"token id 2048 is not in the vocabulary, whose ids are 0\.\.2047"),
        ([True], TypeError, "token ids are integers, got bool"),
        ("ab", TypeError, "use encode"),
        (np.array([1.0]), TypeError, "dtype float64"),
        (np.array([[1, 2]]), TypeError, "2-D array"),
        (np.array([5000]), ValueError, "token id 5000"),
    ],
)
def test_decode_refuses_what_is_not_an_id(ids: Any, error: type[Exception], message: str) -> None:
    _, tokenizer = load()
    assert tokenizer.n_vocab == 2048
    for decode in (tokenizer.decode, tokenizer.decode_bytes):
        with pytest.raises(error, match=message):
            decode(ids)


def test_decode_takes_numpy_integers() -> None:
    _, tokenizer = load()
    ids = tokenizer.encode("ROMEO: to be")
    text = tokenizer.decode(ids)
    assert tokenizer.decode(np.array(ids, dtype=np.uint16)) == text
    assert tokenizer.decode([np.int64(i) for i in ids]) == text
    assert tokenizer.token_bytes(np.int32(ids[0])) == tokenizer.decode_bytes(ids[:1])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.token_bytes(2048)
    with pytest.raises(TypeError, match="token ids are integers"):
        tokenizer.token_bytes(1.0)  # type: ignore[arg-type]


# --- a million spaces -------------------------------------------------------------------------


def test_a_million_whitespace_characters_are_tokenised() -> None:
    """tiktoken's regex engine gives up near a million whitespace characters in a row (its
    stack overflows); numpylm cuts such runs out and merges them itself."""
    _, tokenizer = load()
    for text in [" " * 1_000_000, "a" + "\n" * 1_000_000 + "b", "x " + " \t" * 500_000 + "y"]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
    with_eot = "x<|endoftext|>" + " " * 1_000_000 + "<|endoftext|>y"
    ids = tokenizer.encode(with_eot, allow_special=True)
    assert ids.count(tokenizer.eot_id) == 2 and tokenizer.decode(ids) == with_eot


@pytest.mark.parametrize("n", [100_000, 150_001, 400_000])
def test_the_cut_gives_tiktokens_own_tokens(n: int) -> None:
    """Below a million, tiktoken still copes: the cut must give exactly its answer."""
    _, tokenizer = load()
    for text in [" " * n, "word" + " " * n + "word", "a\n" + "\n" * n, "a" + " " * n + "\n b"]:
        assert tokenizer._encode_long(text) == tokenizer.encoding.encode_ordinary(text)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.text(alphabet=st.sampled_from(list(" \t\n\r\x0b\x0c\xa0\u3000\u2028ab'.,é1s")), max_size=60)
)
def test_the_cut_at_a_low_threshold_matches_tiktoken(text: str) -> None:
    """With the threshold lowered to 3, nearly every text is cut, and must still encode as
    tiktoken encodes it."""
    tokenizer = BUILTIN_TOKENIZER
    low = re.compile(tokenizer_module._LONG_RUN.pattern.replace("{100000,}", "{3,}"))
    real = tokenizer_module._LONG_RUN
    tokenizer_module._LONG_RUN = low
    try:
        assert tokenizer._encode_long(text) == tokenizer.encoding.encode_ordinary(text)
    finally:
        tokenizer_module._LONG_RUN = real
