"""Text -> token ids -> batches: what a language model is trained on.

Training reads a plain text file. The text is split by characters into a training part and a
validation part (the last 10%, as nanoGPT does), each part is encoded into token ids once, and
the ids are stored as ``.npy`` files. Later runs open them as memory maps instead of tokenising
again: the cache file is named after the sha256 of the text and a fingerprint of the
tokenizer, so a changed text or another vocabulary can never reuse stale ids.

A training example is a window of ``T + 1`` consecutive tokens: the model reads the first
``T`` (``x``) and, at every position, is asked for the token that follows (``y``, the same
window shifted by one). ``get_batch`` draws ``B`` such windows at random places, from an
explicit ``np.random.Generator`` so that a run (and a resumed run) is reproducible.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import memory
from ..io import checkpoint
from ..tokens.tokenizer import GPT2_PATTERN, Tokenizer

VAL_FRACTION = 0.1
"""The share of the text, counted in characters from its end, that is held out for validation."""


@dataclass(frozen=True)
class TextData:
    """A text file encoded for training: the ids of its two parts.

    Attributes:
        train: (N_train,) token ids of the first ``1 - val_fraction`` of the characters; a
            read-only memory map of uint16 (uint32 for vocabularies above 65536 tokens).
        val: (N_val,) token ids of the rest, the validation text.
        sha256: hex digest of the text's UTF-8 bytes, to tell later whether it changed.
        n_chars: number of characters of the whole text.
        files: the two cache files the ids are read from (``.train.npy``, ``.val.npy``).
    """

    train: np.ndarray
    val: np.ndarray
    sha256: str
    n_chars: int
    files: tuple[Path, Path]


def read_text(path: str | os.PathLike[str]) -> str:
    """The contents of a UTF-8 text file, exactly (no newline translation).

    The file's size is checked against the free memory first (``memory.text_bytes``: reading
    and tokenising it), so a text too large to hold is refused before a byte is read.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the path is a directory, a pipe or a device, not a file.
        ValueError: the file is not UTF-8 text, or would not fit in memory.
    """
    p = Path(path)
    n = checkpoint.regular_file(p, "text file", "check the --data path")
    memory.fits(
        memory.text_bytes(n),
        f"reading and tokenising {p} ({memory.size(n)})",
        "use a part of the file",
    )
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p} is not UTF-8 text ({e}); convert it to UTF-8 first") from e


def split_text(text: str, val_fraction: float = VAL_FRACTION) -> tuple[str, str]:
    """Split ``text`` into (train, validation): the validation part is the last
    ``val_fraction`` of the characters, as in nanoGPT."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_train = int(len(text) * (1.0 - val_fraction))
    return text[:n_train], text[n_train:]


TOKENIZER_RECORD = "numpylm_tokenizer_sha256"
"""The ``config.json`` key that records the fingerprint of the tokenizer a model was trained
with (``tokenizer_fingerprint``); Hugging Face's readers ignore it."""


# tiktoken's own "gpt2" encoding spells GPT-2's split pattern with possessive quantifiers (for
# speed); it cuts every text as GPT2_PATTERN does, so both count as one pattern. Without this, a
# run trained with tiktoken's encoding and reloaded from its vocab.json + merges.txt (which use
# GPT2_PATTERN) would look like another tokenizer.
_TIKTOKEN_GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """A hex digest that changes whenever the tokenizer would encode some text differently:
    its split pattern, its ranks (token bytes -> id) and its special tokens."""
    enc = tokenizer.encoding
    pattern = GPT2_PATTERN if enc._pat_str == _TIKTOKEN_GPT2_PATTERN else enc._pat_str
    h = hashlib.sha256(pattern.encode())
    for token, rank in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1]):
        h.update(rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token)
    for name, rank in sorted(enc._special_tokens.items()):
        h.update(name.encode() + rank.to_bytes(4, "little"))
    return h.hexdigest()


def id_dtype(n_vocab: int) -> np.dtype[np.unsignedinteger]:
    """The smallest unsigned integer type that holds every id (uint16 covers GPT-2's 50257)."""
    return np.dtype(np.uint16) if n_vocab <= 2**16 else np.dtype(np.uint32)


def encode_cached(text: str, tokenizer: Tokenizer, cache_file: Path) -> np.ndarray:
    """Token ids of ``text``, computed once and kept in ``cache_file`` (a ``.npy``).

    The caller names the file after the text and the tokenizer (see ``load_text_data``); a file
    that exists is trusted and opened as a read-only memory map, so a corpus larger than memory
    costs only what is read. The file is written atomically: an interrupted run leaves no
    half-written cache behind.

    Returns:
        (N,) read-only uint16 or uint32 array of token ids.
    """
    if not cache_file.is_file():
        ids = np.asarray(tokenizer.encode(text), dtype=id_dtype(tokenizer.n_vocab))  # (N,)
        buffer = io.BytesIO()
        np.save(buffer, ids, allow_pickle=False)
        checkpoint.atomic_write_bytes(cache_file, buffer.getvalue())
    try:
        return np.load(cache_file, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise checkpoint.CheckpointError(
            f"the token cache {cache_file} is unreadable ({e}); delete it to tokenise again"
        ) from e


def load_text_data(
    path: str | os.PathLike[str],
    tokenizer: Tokenizer,
    cache_dir: str | os.PathLike[str],
    val_fraction: float = VAL_FRACTION,
    text: str | None = None,
) -> TextData:
    """Read a text file, split it, and encode both parts (cached in ``cache_dir``).

    ``text`` may be passed when the caller has already read the file. The cache files are
    ``<file stem>.<key>.train.npy`` and ``.val.npy``, where ``key`` hashes the text, the
    tokenizer and the split.
    """
    text = read_text(path) if text is None else text
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    key = hashlib.sha256(
        f"{sha} {tokenizer_fingerprint(tokenizer)} {val_fraction!r}".encode()
    ).hexdigest()[:16]
    stem = Path(path).stem or "text"
    parts = split_text(text, val_fraction)
    files = tuple(_cache_file(Path(cache_dir), stem, key, name) for name in ("train", "val"))
    train, val = (encode_cached(part, tokenizer, f) for part, f in zip(parts, files, strict=True))
    return TextData(train, val, sha, len(text), (files[0], files[1]))


def _cache_file(cache_dir: Path, stem: str, key: str, part: str) -> Path:
    """The cache of one part of a text: ``<stem>.<key>.<part>.npy``, or a cache of the same
    ``key`` under another stem (the text file was renamed since: its ids are the same)."""
    same = sorted(cache_dir.glob(f"*.{key}.{part}.npy"))
    return same[0] if same else cache_dir / f"{stem}.{key}.{part}.npy"


def get_batch(
    ids: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` random windows of ``block_size + 1`` tokens from ``ids``.

    Args:
        ids: (N,) token ids, N > block_size.
        batch_size: B, the number of windows.
        block_size: T, the number of tokens the model reads per window.
        rng: where the window starts come from (the only randomness of a batch).

    Returns:
        x: (B, T) int64 inputs; y: (B, T) int64 targets, ``y[b, t] == x[b, t + 1]``.
    """
    n = len(ids)
    if n <= block_size:
        raise ValueError(
            f"the text has {n} tokens, but a training window needs block_size + 1 = "
            f"{block_size + 1}: use more text or a smaller context (--n-ctx)"
        )
    starts = rng.integers(0, n - block_size, size=batch_size)  # (B,)
    idx = starts[:, None] + np.arange(block_size + 1)  # (B, T + 1), one gather for the batch
    window = np.asarray(ids[idx], dtype=np.int64)
    return window[:, :-1], window[:, 1:]


def eval_windows(ids: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``ids`` into non-overlapping windows, so every token after the first is predicted
    exactly once (what a validation loss over a whole text needs).

    The last window is usually shorter: its inputs are padded with id 0 and its targets with
    -1, which the loss ignores.

    Returns:
        x: (W, T) int64 inputs; y: (W, T) int64 targets, -1 where there is nothing to predict.
    """
    n_targets = len(ids) - 1
    if n_targets < 1:
        raise ValueError(f"need at least 2 tokens to evaluate, got {len(ids)}")
    W = -(-n_targets // block_size)  # ceil
    x = np.zeros(W * block_size, dtype=np.int64)
    y = np.full(W * block_size, -1, dtype=np.int64)
    x[:n_targets] = ids[:-1]
    y[:n_targets] = ids[1:]
    return x.reshape(W, block_size), y.reshape(W, block_size)


def chars_per_token(tokenizer: Tokenizer) -> np.ndarray:
    """(V,) int64: how many characters of text each token id begins.

    A token is a byte string and may hold part of a multi-byte UTF-8 character; counting the
    bytes that *start* a character (every byte but the continuation bytes 0b10xxxxxx) assigns
    each character to exactly one token, so summing over a text's ids gives its length.
    Special tokens such as ``<|endoftext|>`` stand for no text and count 0.
    """
    enc = tokenizer.encoding
    counts = np.zeros(tokenizer.n_vocab, dtype=np.int64)
    for token, rank in enc._mergeable_ranks.items():
        counts[rank] = sum(1 for b in token if b & 0xC0 != 0x80)
    return counts
