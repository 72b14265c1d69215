"""BPE training: hand-checked merges, a naive reference trainer, and parity between the plain
Python encoder, tiktoken and transformers on text the trainer never saw."""

from __future__ import annotations

import random
from collections import Counter
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm import Tokenizer, train_bpe
from numpylm.tokens.bpe import encode_with_merges, ranks_from_merges, train_bpe_merges
from numpylm.tokens.tokenizer import GPT2_PATTERN, merges_from_ranks

WORDS = [
    "the", "king", "queen", "lord", "love", "death", "night", "sweet", "good", "thou", "thee",
    "shall", "would", "café", "naïve", "straße", "Ελλάδα", "москва", "日本語", "🙂", "42", "1999",
]  # fmt: skip

# Text the trainer never sees: other words, other scripts, emoji, digits, odd whitespace.
SYLLABLES = ["ka", "ro", "mi", "ne", "str", "ou", "ell", "ü", "жи", "語", "x", "q"]

UNSEEN = (
    "Zebras quietly juxtapose 3141 fjords; naïveté, façade & coöperate!\n\n"
    "Привет, мир. 你好，世界。 こんにちは 👋🏽👨‍👩‍👧 ∑ x² ≠ ∞\t\ttabs   and  spaces  \n"
    "don't we'll they're O'Neill's <|endoftext|> end."
)


def corpus(n_words: int, seed: int = 0) -> str:
    """A pseudo-random text of ``n_words`` words in lines: words from a small multilingual
    list, and made-up words of random syllables so that there is plenty left to merge."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_words // 8):
        words = [
            rng.choice(WORDS) if rng.random() < 0.5 else "".join(rng.choices(SYLLABLES, k=3))
            for _ in range(8)
        ]
        lines.append(" ".join(words) + rng.choice([".", ",", "!", "?", "'s"]))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def trained() -> tuple[list[tuple[bytes, bytes]], Tokenizer]:
    """Merges learned from ``corpus(4000)`` and the tokenizer built from them (vocab 400)."""
    merges = train_bpe_merges(corpus(4000), 400 - 257)
    return merges, Tokenizer.from_ranks(ranks_from_merges(merges))


def naive_merges(text: str, n_merges: int) -> list[tuple[bytes, bytes]]:
    """The textbook algorithm, slowly: every chunk of the text (repeats included) as a list of
    byte strings; recount all adjacent pairs from scratch before each merge."""
    chunks = [[bytes([b]) for b in c.encode("utf-8")] for c in regex.findall(GPT2_PATTERN, text)]
    ids = {bytes([b]): b for b in range(256)}
    merges = []
    for _ in range(n_merges):
        counts = Counter(p for chunk in chunks for p in pairwise(chunk))
        # most frequent, then the smaller ids: the tie-break train_bpe documents
        a, b = min(counts, key=lambda p: (-counts[p], ids[p[0]], ids[p[1]]))
        merges.append((a, b))
        ids[a + b] = len(ids)
        for chunk in chunks:
            i = 0
            while i < len(chunk) - 1:
                if chunk[i] == a and chunk[i + 1] == b:
                    chunk[i : i + 2] = [a + b]
                i += 1
    return merges


def test_first_merges_by_hand() -> None:
    # One chunk "aaabdaaabac". Pairs: aa x4 (each "aaa" holds two), then ab, ba, bd, da, ac.
    # Merge 1: a+a. Now "aa a b d aa a b a c": (aa, a) and (a, b) both occur twice; the tie goes
    # to the smaller first id, a (97) before aa (256). Merge 2: a+b -> "aa ab d aa ab a c".
    # Merge 3: aa+ab, twice.
    assert train_bpe_merges("aaabdaaabac", 3) == [(b"a", b"a"), (b"a", b"b"), (b"aa", b"ab")]


def test_merges_never_cross_chunk_boundaries() -> None:
    # "a", " b", " c" are three chunks: the only pairs are " "+"b" and " "+"c" (a tie, b first)
    assert train_bpe_merges("a b c", 2) == [(b" ", b"b"), (b" ", b"c")]
    with pytest.raises(ValueError, match=r"after 2 merges.*at most 259"):
        train_bpe_merges("a b c", 3)
    with pytest.raises(ValueError, match="at most 259"):
        train_bpe("a b c", 260)


def test_matches_naive_trainer() -> None:
    # unique chunks + incremental counts + heap must learn exactly what recounting learns
    text = corpus(1500, seed=1)
    assert train_bpe_merges(text, 150) == naive_merges(text, 150)


def test_deterministic_and_order_independent() -> None:
    text = corpus(2000, seed=2)
    merges = train_bpe_merges(text, 120)
    assert train_bpe_merges(text, 120) == merges
    # The same chunks in another order (lines shuffled) learn the same merges: the result
    # depends on the counts alone, not on which chunk came first.
    lines = text.splitlines(keepends=True)
    random.Random(0).shuffle(lines)
    assert train_bpe_merges("".join(lines), 120) == merges


def test_train_bpe_vocabulary(trained: tuple[list[tuple[bytes, bytes]], Tokenizer]) -> None:
    merges, _ = trained
    tok = train_bpe(corpus(4000), 400)
    assert tok.n_vocab == 400
    assert tok.eot_id == 399
    assert tok.encode("<|endoftext|>", allow_special=True) == [399]
    for b in range(256):
        assert tok.encoding.decode_single_token_bytes(b) == bytes([b])
    for i, (a, b) in enumerate(merges):
        assert tok.encoding.decode_single_token_bytes(256 + i) == a + b
    # a frequent word of the corpus is one token; the merges compress the text
    assert len(tok.encode(" queen")) == 1
    assert len(tok.encode(corpus(500, seed=3))) < len(corpus(500, seed=3).encode("utf-8")) / 2.5


def test_encoder_matches_tiktoken_on_unseen_text(
    trained: tuple[list[tuple[bytes, bytes]], Tokenizer],
) -> None:
    merges, tok = trained
    for text in (UNSEEN, corpus(300, seed=9), "queen🙂queen", ""):
        ids = encode_with_merges(text, merges)
        assert ids == tok.encode(text)
        assert tok.decode(ids) == text


@cache
def hypothesis_tokenizer() -> tuple[list[tuple[bytes, bytes]], Tokenizer]:
    # hypothesis does not mix with function-scoped fixtures, so its tokenizer is cached here
    merges = train_bpe_merges(corpus(2000, seed=4) + UNSEEN[:40], 200)
    return merges, Tokenizer.from_ranks(ranks_from_merges(merges))


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=80)
    | st.lists(st.sampled_from([*WORDS, *SYLLABLES, " ", "  ", "\n", ".", "'s", "é"])).map("".join)
)
def test_encoder_matches_tiktoken_on_any_text(text: str) -> None:
    merges, tok = hypothesis_tokenizer()
    ids = encode_with_merges(text, merges)
    assert ids == tok.encode(text)
    assert tok.decode(ids) == text


def test_vocab_size_validation() -> None:
    with pytest.raises(ValueError, match="at least 257"):
        train_bpe("hello world", 256)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        train_bpe("hello world", 300.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        train_bpe("hello world", True)
    with pytest.raises(TypeError, match="text must be a str"):
        train_bpe(b"hello world", 300)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_merges"):
        train_bpe_merges("hello world", -1)
    # 257: no merges at all, every byte its own token
    tok = train_bpe("", 257)
    assert tok.n_vocab == 257
    assert tok.encode("hé") == list("hé".encode())


def test_verbose_prints_each_merge(capsys: pytest.CaptureFixture[str]) -> None:
    train_bpe("aaabdaaabac", 260, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "merge 1/3: b'a' + b'a' -> b'aa' (id 256, 4 times)",
        "merge 2/3: b'a' + b'b' -> b'ab' (id 257, 2 times)",
        "merge 3/3: b'aa' + b'ab' -> b'aaab' (id 258, 2 times)",
    ]


def test_save_and_reload(
    tmp_path: Path, trained: tuple[list[tuple[bytes, bytes]], Tokenizer]
) -> None:
    merges, tok = trained
    # save_pretrained rebuilds the merge list from the ranks: it must be the learned one
    assert merges_from_ranks(tok.encoding._mergeable_ranks) == merges
    tok.save_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.n_vocab == tok.n_vocab and again.eot_id == tok.eot_id
    assert again.encoding._mergeable_ranks == tok.encoding._mergeable_ranks
    assert again.encode(UNSEEN) == tok.encode(UNSEEN)


def test_transformers_reads_the_saved_files(
    tmp_path: Path, trained: tuple[list[tuple[bytes, bytes]], Tokenizer]
) -> None:
    transformers = pytest.importorskip("transformers")
    _, tok = trained
    tok.save_pretrained(tmp_path)
    hf = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    assert len(hf) == tok.n_vocab
    text = UNSEEN.replace("<|endoftext|>", "")  # transformers reads it as the special token
    assert hf.encode(text) == tok.encode(text)
    assert hf.encode("<|endoftext|>") == [tok.eot_id]


def test_shakespeare(shakespeare: Path) -> None:
    text = shakespeare.read_text(encoding="utf-8")
    split = int(0.9 * len(text))
    train, held_out = text[:split], text[split:]
    merges = train_bpe_merges(train, 1024 - 257)
    tok = Tokenizer.from_ranks(ranks_from_merges(merges))
    # the first merge is the most frequent adjacent byte pair inside a chunk, counted directly
    pairs = Counter(
        p for c in regex.findall(GPT2_PATTERN, train) for p in pairwise(c.encode("utf-8"))
    )
    (a, b), _ = pairs.most_common(1)[0]
    assert merges[0] == (bytes([a]), bytes([b]))
    # the plain encoder and tiktoken agree on the 10% the trainer never saw
    ids = encode_with_merges(held_out, merges)
    assert ids == tok.encode(held_out)
    assert tok.decode(ids) == held_out
    assert len(held_out) / len(ids) > 2.0  # characters per token: the merges do compress


def test_the_naive_trainer_learns_the_same_merges() -> None:
    """The few-line recipe (recount, merge the top pair, repeat) and the fast incremental
    trainer agree merge for merge, ties included: a text where many pairs are equally frequent
    decides ties at almost every step."""
    from tinyrun import VERSE

    from numpylm.tokens.bpe import train_bpe_merges_naive

    for text, n in [(VERSE * 3, 70), ("ab ba ab ba cd dc " * 5 + "aaaa bbbb", 12), ("xyz", 2)]:
        assert train_bpe_merges_naive(text, n) == train_bpe_merges(text, n)
    with pytest.raises(ValueError, match="too small"):
        train_bpe_merges_naive("ab", 2)
