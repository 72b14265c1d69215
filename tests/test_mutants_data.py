"""The data pipeline's bookkeeping: the cache's names and what it refuses to open, the
tokenizer's fingerprint (recorded in users' model directories), dtypes at their boundaries.

Written for the survivors of a mutation run over ``data.py`` (docs/reliability.md, "Mutation
testing").
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from numpylm.io.checkpoint import CheckpointError
from numpylm.tokens.tokenizer import GPT2_PATTERN, Tokenizer
from numpylm.training.data import (
    _TIKTOKEN_GPT2_PATTERN,
    chars_per_token,
    encode_cached,
    eval_windows,
    get_batch,
    id_dtype,
    load_text_data,
    read_text,
    split_text,
    tokenizer_fingerprint,
)

RANKS = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"cd": 257}


def tok(pattern: str = GPT2_PATTERN, ranks: dict[bytes, int] = RANKS) -> Tokenizer:
    return Tokenizer.from_ranks(ranks, name="bytes", pattern=pattern)


def test_the_fingerprint_of_a_tokenizer_never_changes() -> None:
    """The fingerprint is written into every trained model's config.json: a change to how it
    is computed would make every saved model look as if its tokenizer were another's. This is
    the value numpylm wrote for this tokenizer when the test was made."""
    assert tokenizer_fingerprint(tok()) == (
        "8ea0b3b5e05d56c08e53e46c131ecffb6500b56e42bd8d9f82713ab80b51efce"
    )


def test_tiktokens_spelling_of_the_gpt2_pattern_is_the_same_tokenizer() -> None:
    assert tokenizer_fingerprint(tok(_TIKTOKEN_GPT2_PATTERN)) == tokenizer_fingerprint(tok())
    assert tokenizer_fingerprint(tok(r"\S+|\s+")) != tokenizer_fingerprint(tok())
    other = RANKS | {b"ab": 257, b"cd": 256}
    assert tokenizer_fingerprint(tok(ranks=other)) != tokenizer_fingerprint(tok())


def test_id_dtype_at_its_boundary() -> None:
    assert id_dtype(2**16) == np.uint16
    assert id_dtype(2**16 + 1) == np.uint32 and id_dtype(2**17) == np.uint32


def test_read_text_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as refused:
        read_text(tmp_path / "absent.txt")
    assert str(refused.value) == (
        f"no text file at {str(tmp_path / 'absent.txt')!r}: check the --data path"
    )


def test_split_text_refuses_no_validation() -> None:
    for fraction in (0.0, 1.0):
        with pytest.raises(
            ValueError, match=rf"^val_fraction must be between 0 and 1 .*{fraction}"
        ):
            split_text("some text", fraction)


def test_the_cache_files_are_named_after_the_file_the_text_and_the_split(tmp_path: Path) -> None:
    text = "ab cd ab cd abcd " * 10
    data = load_text_data(tmp_path / "corpus.txt", tok(), tmp_path / "cache", 0.5, text=text)
    assert data.sha256 == hashlib.sha256(text.encode()).hexdigest() and data.n_chars == len(text)
    names = [f.name for f in data.files]
    assert re.fullmatch(r"corpus\.[0-9a-f]{16}\.train\.npy", names[0])
    assert names[1] == names[0].replace(".train.", ".val.")
    train, val = split_text(text, 0.5)
    assert data.train.tolist() == tok().encode(train) and data.val.tolist() == tok().encode(val)
    assert np.load(data.files[1]).tolist() == data.val.tolist()
    nameless = load_text_data("", tok(), tmp_path / "cache", text=text)  # no file name to use
    assert nameless.files[0].name.startswith("text.")


def test_a_cache_that_holds_pickled_objects_is_never_unpickled(tmp_path: Path) -> None:
    """The cache directory is inside the run directory, where anyone might drop a file: an
    ``.npy`` of Python objects is refused, never unpickled (unpickling can run code)."""
    cache = tmp_path / "c.npy"
    np.save(cache, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(
        CheckpointError,
        match=r"^the token cache .* is unreadable \(.*\); "
        "delete it to tokenise again$",
    ):
        encode_cached("text", tok(), cache)


def test_get_batch_says_how_many_tokens_a_window_needs() -> None:
    with pytest.raises(ValueError) as refused:
        get_batch(np.arange(8), 2, 8, np.random.default_rng(0))
    assert str(refused.value) == (
        "the text has 8 tokens, but a training window needs block_size + 1 = 9: use more text or "
        "a smaller context (--n-ctx)"
    )


def test_eval_windows_of_two_tokens_and_of_one() -> None:
    x, y = eval_windows(np.array([3, 4], dtype=np.uint16), 4)
    assert x.dtype == y.dtype == np.int64
    assert x.tolist() == [[3, 0, 0, 0]] and y.tolist() == [[4, -1, -1, -1]]
    with pytest.raises(ValueError) as refused:
        eval_windows(np.array([3]), 4)
    assert str(refused.value) == "need at least 2 tokens to evaluate, got 1"


def test_chars_per_token_counts_in_integers() -> None:
    counts = chars_per_token(tok())
    assert counts.dtype == np.int64 and counts[256] == 2 and counts[0xC3] == 1
    assert counts[0xA9] == 0  # a continuation byte begins no character
