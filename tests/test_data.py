"""Text -> token ids -> batches: the split, the cache, random windows and evaluation windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from numpylm.tokens.bpe import train_bpe
from numpylm.tokens.tokenizer import Tokenizer
from numpylm.training.data import (
    chars_per_token,
    encode_cached,
    eval_windows,
    get_batch,
    load_text_data,
    read_text,
    split_text,
    tokenizer_fingerprint,
)

TEXT = "Déjà vu, naïve café 🙂 — to be or not to be.\nThat is the question; 42 × 7 = 294.\n" * 30


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    """A small BPE vocabulary that has merged multi-byte characters (é, 🙂) into tokens."""
    return train_bpe(TEXT, 300)


def test_split_is_last_tenth_of_characters() -> None:
    train, val = split_text(TEXT)
    assert train + val == TEXT
    assert len(val) == len(TEXT) - int(0.9 * len(TEXT))
    with pytest.raises(ValueError, match="val_fraction"):
        split_text(TEXT, 1.0)


def test_read_text_keeps_bytes_and_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes("a\r\nb é".encode())
    assert read_text(path) == "a\r\nb é"  # no newline translation: the characters as stored
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_text(tmp_path / "latin1.txt")
    with pytest.raises(FileNotFoundError, match="--data"):
        read_text(tmp_path / "missing.txt")


def test_ids_are_cached_as_memmap_and_keyed_on_text_and_tokenizer(
    tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    cache = tmp_path / "cache"
    data = load_text_data(path, tok, cache)
    train_text, val_text = split_text(TEXT)
    assert data.train.tolist() == tok.encode(train_text)
    assert data.val.tolist() == tok.encode(val_text)
    assert data.train.dtype == np.uint16
    assert data.n_chars == len(TEXT)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".train.npy") and files[1].endswith(".val.npy")

    # The second time nothing is tokenised: the ids come from the memory-mapped cache.
    def refuse(*args: object, **kwargs: object) -> list[int]:
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(tok, "encode", refuse)
    again = load_text_data(path, tok, cache)
    assert isinstance(again.train, np.memmap) and not again.train.flags.writeable
    assert np.array_equal(again.train, data.train)
    monkeypatch.undo()

    # Another text, or another tokenizer, gets its own cache files.
    path.write_text(TEXT + "more", encoding="utf-8")
    load_text_data(path, tok, cache)
    other = train_bpe(TEXT, 280)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(train_bpe(TEXT, 300)) == tokenizer_fingerprint(tok)
    load_text_data(path, other, cache)
    assert len(list(cache.iterdir())) == 6


def test_corrupt_cache_gives_clear_error(tmp_path: Path, tok: Tokenizer) -> None:
    cache_file = tmp_path / "ids.npy"
    encode_cached(TEXT, tok, cache_file)
    cache_file.write_bytes(cache_file.read_bytes()[:20])
    with pytest.raises(ValueError, match="delete it"):
        encode_cached(TEXT, tok, cache_file)


def test_get_batch_windows_are_shifted_slices_and_reproducible() -> None:
    ids = np.arange(1000, 1100, dtype=np.uint16)  # id = 1000 + position, so windows are legible
    B, T = 64, 8
    x, y = get_batch(ids, B, T, np.random.default_rng(0))
    assert x.shape == y.shape == (B, T) and x.dtype == np.int64
    starts = x[:, 0] - 1000
    assert np.array_equal(x, ids[starts[:, None] + np.arange(T)])
    assert np.array_equal(y, x + 1)  # y is the next token of every position
    x2, _ = get_batch(ids, B, T, np.random.default_rng(0))
    x3, _ = get_batch(ids, B, T, np.random.default_rng(1))
    assert np.array_equal(x, x2) and not np.array_equal(x, x3)
    with pytest.raises(ValueError, match="block_size"):
        get_batch(ids[:8], 1, 8, np.random.default_rng(0))


def test_get_batch_starts_are_uniform_over_every_window() -> None:
    """Every start 0 .. N - T - 1 is possible (the last window ends on the last token), and
    starts are uniform: a chi-square test over the 20 possible starts."""
    N, T = 28, 8
    ids = np.arange(N)
    x, y = get_batch(ids, 20000, T, np.random.default_rng(123))
    counts = np.bincount(x[:, 0], minlength=N - T)
    assert counts.shape == (N - T,) and counts.min() > 0
    assert y[:, -1].max() == N - 1
    expected = 20000 / (N - T)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8  # 99.9th percentile of chi-square with 19 degrees of freedom


def test_eval_windows_predict_every_token_once() -> None:
    ids = np.arange(10, 33)  # 23 tokens -> 22 targets -> windows of 8: 8 + 8 + 6 (padded)
    x, y = eval_windows(ids, 8)
    assert x.shape == y.shape == (3, 8)
    counted = y >= 0
    assert np.array_equal(y[counted], ids[1:])
    assert np.array_equal(x[counted], ids[:-1])
    assert counted.sum() == len(ids) - 1 and not counted[-1, -2:].any()


def test_chars_per_token_counts_characters_not_bytes(tok: Tokenizer) -> None:
    text = "naïve 🙂 café, déjà — 294 × 7, 日本"  # 日本 was never seen: split into single bytes
    ids = tok.encode(text)
    counts = chars_per_token(tok)
    assert len(text.encode()) > len(text)  # multi-byte characters are in play
    assert int(counts[ids].sum()) == len(text)
    assert counts[tok.eot_id] == 0
    assert 0 in counts[ids]  # a continuation byte on its own begins no character


def test_chars_per_token_gpt2(tiktoken_gpt2: None) -> None:
    gpt2 = Tokenizer.gpt2()
    text = "Ünïcödé: 日本語のテキスト, emoji 🙂🚀 and ASCII."
    assert int(chars_per_token(gpt2)[gpt2.encode(text)].sum()) == len(text)
