"""The tokenizer's edges: the last id and the first id past it, the files it writes and the
files it refuses, and its own BPE merge against tiktoken's.

Written for the survivors of a mutation run over ``tokenizer.py`` (docs/reliability.md,
"Mutation testing"). A small byte-level vocabulary keeps them fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from numpylm.io.checkpoint import CheckpointError
from numpylm.tokens import tokenizer as tokenizer_module
from numpylm.tokens.tokenizer import (
    GPT2_PATTERN,
    Tokenizer,
    bytes_to_unicode,
    merges_from_ranks,
    ranks_from_vocab,
    read_merges,
)

# 256 bytes and four merges: " t" 256, "he" 257, " the" 258 (from " t" + "he"), "ll" 259
RANKS = {bytes([b]): b for b in range(256)} | {b" t": 256, b"he": 257, b" the": 258, b"ll": 259}
EOT_ID = 260


@pytest.fixture
def tok() -> Tokenizer:
    return Tokenizer.from_ranks(RANKS, name="bytes")


def test_the_last_id_is_the_end_of_text_and_the_next_is_refused(tok: Tokenizer) -> None:
    assert tok.n_vocab == 261 and tok.eot_id == EOT_ID
    assert tok.token_bytes(EOT_ID) == b"<|endoftext|>" and tok.token_bytes(0) == b"\x00"
    assert tok.decode([0, EOT_ID]) == "\x00<|endoftext|>"
    assert tok.decode(np.array([0, EOT_ID])) == "\x00<|endoftext|>"
    message = "token id 261 is not in the vocabulary, whose ids are 0..260 (n_vocab=261)"
    for caller, call in [("decode", tok.decode), ("decode_bytes", tok.decode_bytes)]:
        for ids in ([261], [5, 261], np.array([5, 261]), np.array([261, -1])):
            with pytest.raises(ValueError) as refused:
                call(ids)
            assert str(refused.value) == f"{caller}: {message}"
        for ids in ([-1], np.array([3, -1])):
            with pytest.raises(ValueError, match=f"^{caller}: token id -1 is not in the"):
                call(ids)
    for i in (261, -1, np.int64(261)):
        with pytest.raises(ValueError, match=f"^token_bytes: token id {int(i)} is not in the"):
            tok.token_bytes(i)  # type: ignore[arg-type]


def test_empty_ids_decode_to_nothing(tok: Tokenizer) -> None:
    assert tok.decode([]) == "" and tok.decode(np.array([], dtype=np.int64)) == ""
    assert tok.decode_bytes(()) == b""


def test_ids_that_are_not_integers_are_named_with_their_position(tok: Tokenizer) -> None:
    with pytest.raises(TypeError) as refused:
        tok.decode([1, 2, np.float32(3.0)])
    assert str(refused.value) == (
        "decode: token ids are integers, got float32 np.float32(3.0) (position 2); pass whole "
        "numbers (a float array: ids.astype(np.int64))"
    )
    with pytest.raises(
        TypeError,
        match=r"^token_bytes: token ids are integers, got bool True "
        r"\(one id\)",
    ):
        tok.token_bytes(True)
    with pytest.raises(TypeError, match=r"got bool np\.True_ \(position 0\)"):
        tok.decode([np.bool_(True)])
    with pytest.raises(
        TypeError,
        match=r"^decode takes a sequence of token ids, got int 5; wrap "
        "one id in a list$",
    ):
        tok.decode(5)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^decode_bytes takes a sequence of token ids, got bytes "
        r"b'ab'; to turn text into ids, use encode\(\)$",
    ):
        tok.decode_bytes(b"ab")  # type: ignore[arg-type]
    long = "x" * 100
    with pytest.raises(TypeError, match=rf"got str '{'x' * 36}\.\.\.; to turn"):
        tok.decode(long)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^decode takes a sequence of integer token ids, got an "
        r"array of dtype float32: pass a 1-D integer array",
    ):
        tok.decode(np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="got a 0-D array"):
        tok.decode(np.array(3))
    assert tok.decode(np.array([104, 105], dtype=object)) == "hi"  # an object array of ints


def test_encode_takes_text_only(tok: Tokenizer) -> None:
    with pytest.raises(TypeError, match=r"^encode\(\) takes a str, got bytes$"):
        tok.encode(b"the")  # type: ignore[arg-type]
    assert tok.encode("<|endoftext|>", allow_special=True) == [EOT_ID]
    assert EOT_ID not in tok.encode("<|endoftext|>")
    assert tok.encode(" the hell") == [258, 32, 257, 259]
    assert tok.tokens(" the hell") == [" the", " ", "he", "ll"]


def test_an_encoding_without_end_of_text_is_refused() -> None:
    plain = tiktoken.Encoding(
        name="plain", pat_str=GPT2_PATTERN, mergeable_ranks=RANKS, special_tokens={}
    )
    with pytest.raises(ValueError, match=r"^the encoding 'plain' has no <\|endoftext\|> token$"):
        Tokenizer(plain)


def test_repr(tok: Tokenizer) -> None:
    assert repr(tok) == "Tokenizer('bytes', n_vocab=261)"


def test_gpt2s_byte_alphabet() -> None:
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord("!")] == "!" and table[ord("~")] == "~" and table[0xA1] == "¡"
    assert table[0xAC] == "¬" and table[0xAE] == "®" and table[0xFF] == "ÿ"
    # the others, in byte order, from U+0100: byte 0 is Ā, a space (32) Ġ, a newline (10) Ċ
    assert table[0] == "Ā" and table[32] == "Ġ" and table[10] == "Ċ" and table[0xAD] == "Ń"


def test_saved_files_are_gpt2s(tok: Tokenizer, tmp_path: Path) -> None:
    assert tok.save_pretrained(tmp_path) == tmp_path
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["<|endoftext|>"] == EOT_ID and vocab["Ġthe"] == 258 and vocab["Ġ"] == 32
    assert len(vocab) == 261
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8")
    assert merges == "#version: 0.2\nĠ t\nh e\nĠt he\nl l\n"
    assert json.loads((tmp_path / "tokenizer_config.json").read_text()) == {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "add_prefix_space": False,
        "model_max_length": 1024,
    }
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.encoding._mergeable_ranks == RANKS and again.eot_id == EOT_ID


def test_a_missing_file_is_named(tok: Tokenizer, tmp_path: Path) -> None:
    tok.save_pretrained(tmp_path)
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=rf"^no merges\.txt at '{tmp_path}/merges\.txt': {tmp_path} has no merges\.txt, "
        r"and a GPT-2 tokenizer needs vocab\.json and merges\.txt$",
    ):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "merges.txt").mkdir()  # not a file: refused before it is opened
    with pytest.raises(CheckpointError, match=r"^merges\.txt '.*merges\.txt' is a directory, "):
        Tokenizer.from_pretrained(tmp_path)


def merges_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "merges.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_merges(tmp_path: Path) -> None:
    assert read_merges(merges_file(tmp_path, "#version: 0.2\nĠ t\n\nh e\n")) == [
        ("Ġ", "t"),
        ("h", "e"),
    ]
    assert read_merges(merges_file(tmp_path, "Ġ t")) == [("Ġ", "t")]  # no version line
    # only the first line may be the version: later, the same text is a merge like any other
    later = merges_file(tmp_path, "Ġ t\n#version: 0.2\n")
    assert read_merges(later) == [("Ġ", "t"), ("#version:", "0.2")]
    for line in ("a  b", " a", "a", "a b c"):
        with pytest.raises(CheckpointError, match=rf"merges\.txt, line 1: .* found {line!r}"):
            read_merges(merges_file(tmp_path, line + "\n"))


def test_read_merges_refuses_a_character_outside_the_alphabet(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"line 1: the token 'é€' has a character outside"):
        read_merges(merges_file(tmp_path, "é€ t\n"))
    (tmp_path / "bad.txt").write_bytes(b"a b\n\xff\xfe")
    with pytest.raises(
        CheckpointError,
        match=r"bad\.txt is not UTF-8 text \(byte 0xff at offset "
        "4 cannot be decoded\\): it is not a merges.txt",
    ):
        read_merges(tmp_path / "bad.txt")


def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    table = bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)} | {"Ġt": 256, "he": 257, "<|endoftext|>": 258}
    return vocab, [("Ġ", "t"), ("h", "e")]


def refused(vocab: dict[str, object], merges: list[tuple[str, str]]) -> str:
    with pytest.raises(CheckpointError) as e:
        ranks_from_vocab(vocab, merges, "V", "M")  # type: ignore[arg-type]
    return str(e.value)


def test_ranks_from_vocab_accepts_gpt2s_layout() -> None:
    vocab, merges = vocab_and_merges()
    ranks = ranks_from_vocab(vocab, merges)
    assert ranks == {bytes([b]): b for b in range(256)} | {b" t": 256, b"he": 257}
    del vocab["<|endoftext|>"]  # it may be left out
    assert ranks_from_vocab(vocab, merges) == ranks


def test_ranks_from_vocab_names_what_is_wrong() -> None:
    vocab, merges = vocab_and_merges()
    assert (
        refused(vocab | {"he": True}, merges)
        == "V: token 'he' has the id True; ids are whole numbers"
    )
    assert refused(vocab | {"he": -3}, merges) == "V: token 'he' has the negative id -3"
    assert refused(vocab | {"he": 256}, merges) == (
        "V: tokens 'Ġt' and 'he' share the id 256; each token needs its own id"
    )
    assert refused(vocab | {"": 259}, merges).startswith("V: the token '' is not a string of")
    assert refused(vocab | {"a b": 259}, merges).startswith("V: the token 'a b' is not a string")
    no_a = {k: v for k, v in vocab.items() if k != "a"}
    assert refused(no_a, merges) == (
        "V has no token for the byte 97 ('a') and 0 more: a byte-level vocabulary holds all 256, "
        "so that any text can be encoded"
    )
    assert refused(vocab, merges[:1]) == (
        "V has 258 tokens besides <|endoftext|>, but 256 bytes + 1 merges in M make a different "
        "number: the two files do not belong together"
    )
    gap = vocab | {"he": 300}
    assert refused(gap, merges) == (
        "V: token 'he' has the id 300, but its 258 tokens should have the ids 0..257, with no gaps"
    )
    swapped = vocab | {"Ġt": 257, "he": 256}
    assert refused(swapped, merges) == (
        "M: merge 1 ('Ġ' + 't') should create token 256 but V gives 257: the ids do not follow "
        "the merge order"
    )
    assert refused(vocab, [("Ġ", "t"), ("h", "e€")]).startswith("M: merge 2: token 'e€' has a ")
    assert refused(vocab | {"<|endoftext|>": 300}, merges) == (
        "V: <|endoftext|> has the id 300, but it must come right after the 258 byte-pair tokens, "
        "as id 258"
    )


def test_merges_from_ranks_rebuilds_the_merge_list() -> None:
    assert merges_from_ranks(RANKS) == [(b" ", b"t"), (b"h", b"e"), (b" t", b"he"), (b"l", b"l")]
    with pytest.raises(
        ValueError, match=r"^token b'abc' cannot be built from lower-ranked merges$"
    ):
        merges_from_ranks({bytes([b]): b for b in range(256)} | {b"abc": 256})


def test_its_own_merge_is_tiktokens() -> None:
    """``_byte_pair_merge`` (used for whitespace runs too long for tiktoken) against tiktoken's
    merge of one piece, on a vocabulary with many overlapping merges and on random pieces."""
    text = "the theme then thesis: hell hello shell, ssss sss  \n\n\n   " * 3
    from numpylm.tokens.bpe import train_bpe

    trained = train_bpe(text, 280)
    ranks = trained.encoding._mergeable_ranks
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b"thes l:\n,om", dtype=np.uint8)
    pieces = [rng.choice(alphabet, size=int(rng.integers(1, 40))).tobytes() for _ in range(300)]
    pieces += [b" " * n for n in range(1, 12)] + [b"hello", b"the", b"\n\n\n"]
    for piece in pieces:
        expected = trained.encoding._encode_single_piece(piece)
        assert tokenizer_module._byte_pair_merge(ranks, piece) == expected, piece


def test_its_own_merge_joins_forward_and_backward() -> None:
    """Hand-made merges where a new part joins the part after it (``ab`` then ``abc``) and the
    part before it (``ab`` then ``cab``), against tiktoken on every piece of up to 7 bytes."""
    ranks = {bytes([b]): b for b in range(256)}
    for token in (b"ab", b"abc", b"cab", b"cc", b"abab", b"ccab", b"bc", b"abcab"):
        ranks[token] = len(ranks)
    encoding = Tokenizer.from_ranks(ranks, name="hand").encoding
    pieces = [b""]
    for _ in range(7):
        pieces = [p + c for p in pieces for c in (b"a", b"b", b"c")]
        for piece in pieces:
            expected = encoding._encode_single_piece(piece)
            assert tokenizer_module._byte_pair_merge(ranks, piece) == expected, piece


def test_the_first_bad_id_is_named_after_a_zero(tok: Tokenizer) -> None:
    for ids in ([0, 261], np.array([0, 261])):
        with pytest.raises(ValueError, match=r"^decode: token id 261 is not in the vocabulary"):
            tok.decode(ids)


def test_bytes_that_are_not_utf8_become_the_replacement_character(tok: Tokenizer) -> None:
    assert tok.decode([0xE2, 0x82]) == "\ufffd" and tok.decode([104, 0xFF]) == "h\ufffd"
    assert tok.token_text(0xFF) == "\ufffd" and tok.token_text(104) == "h"


def test_an_encoding_with_gaps_in_its_ids(tmp_path: Path) -> None:
    """An encoding whose special token sits past a gap (not numpylm's own): the missing ids
    are refused like ids past the end."""
    gapped = tiktoken.Encoding(
        name="gapped",
        pat_str=GPT2_PATTERN,
        mergeable_ranks={bytes([b]): b for b in range(256)},
        special_tokens={"<|endoftext|>": 300},
    )
    tok = Tokenizer(gapped)
    assert tok.n_vocab == 301 and tok.token_bytes(300) == b"<|endoftext|>"
    with pytest.raises(ValueError) as refused:
        tok.token_bytes(280)
    assert str(refused.value) == (
        "token_bytes: token id 280 is not in the vocabulary, whose ids are 0..300 (n_vocab=301)"
    )


def test_gpt2_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(CheckpointError) as refused:
        Tokenizer.gpt2()
    assert str(refused.value) == (
        "could not get GPT-2's tokenizer (ConnectionError): tiktoken downloads it once and "
        "caches it in TIKTOKEN_CACHE_DIR. Connect once, or use a model directory that has its "
        "own vocab.json and merges.txt (train one offline with --tokenizer bpe:1024)"
    )


def test_long_runs_cut_where_tiktoken_cuts() -> None:
    """With a two-space token, a run at the end of the text is one chunk, and a run before a
    word leaves its last space to the word: the cut must give tiktoken's tokens in both."""
    spaced = Tokenizer.from_ranks({bytes([b]): b for b in range(256)} | {b"  ": 256}, name="sp")
    n = tokenizer_module.LONG_WHITESPACE
    two = "a" + " " * n + "b" + "\n" * n + "c"  # two runs: the text before each is kept
    for text in ("a" + " " * n, "a" + " " * (n + 1), "a" + " " * (n + 1) + "b", " " * n + "b", two):
        assert spaced._encode_long(text) == spaced.encoding.encode_ordinary(text)


def test_short_keeps_forty_characters_and_cuts_forty_one(tok: Tokenizer) -> None:
    forty = "x" * 38  # its repr, quotes included, is 40 characters long
    with pytest.raises(TypeError, match=rf"got str '{forty}'; to turn"):
        tok.decode(forty)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=rf"got str '{'x' * 36}\.\.\.; to turn"):
        tok.decode(forty + "x")  # type: ignore[arg-type]


def test_ranks_from_vocab_at_its_exact_edges() -> None:
    vocab, merges = vocab_and_merges()
    del vocab["<|endoftext|>"]
    assert refused(vocab | {"he": 258}, merges) == (  # one past the last id: a gap of one
        "V: token 'he' has the id 258, but its 258 tokens should have the ids 0..257, with no gaps"
    )
    assert refused(vocab, [("Ġ", "t"), ("Ġ", "t")]) == (
        "M: merge 2 ('Ġ' + 't') should create token 257 but V gives 256: the ids do not follow "
        "the merge order"
    )


def test_from_pretrained_names_its_files_and_itself(tok: Tokenizer, tmp_path: Path) -> None:
    d = tmp_path / "my-tokenizer"
    tok.save_pretrained(d)
    assert Tokenizer.from_pretrained(d).encoding.name == "my-tokenizer"
    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    (d / "vocab.json").write_text(json.dumps(vocab | {"ll": 300}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=rf"^{d / 'vocab.json'}: token 'll' has the id 300"):
        Tokenizer.from_pretrained(d)
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\nĠ t\nh e\n", encoding="utf-8")
    with pytest.raises(CheckpointError) as e:
        Tokenizer.from_pretrained(d)
    assert str(e.value).startswith(f"{d / 'vocab.json'} has 260 tokens besides <|endoftext|>")
    assert f"2 merges in {d / 'merges.txt'} make a different number" in str(e.value)


def test_save_pretrained_refuses_other_special_tokens_or_a_normalization(tmp_path: Path) -> None:
    message = (
        "save_pretrained writes GPT-2's vocab.json + merges.txt, which cannot hold the "
        "tokenizer {!r} (its special tokens or normalization differ from GPT-2's); keep the "
        "files it was read from"
    )
    im_end = tiktoken.Encoding(
        name="im",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=RANKS,
        special_tokens={"<|endoftext|>": EOT_ID, "<|im_end|>": EOT_ID + 1},
    )
    nfc = tiktoken.Encoding(
        name="nfc",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=RANKS,
        special_tokens={"<|endoftext|>": EOT_ID},
    )
    for tokenizer in [Tokenizer(im_end), Tokenizer(nfc, normalization="NFC")]:
        with pytest.raises(ValueError) as e:
            tokenizer.save_pretrained(tmp_path / "out")
        assert str(e.value) == message.format(tokenizer.encoding.name)
        assert not (tmp_path / "out").exists()
    assert Tokenizer(nfc).save_pretrained(tmp_path / "out") == tmp_path / "out"


def test_a_byte_without_a_token_is_named_word_for_word() -> None:
    kept = [bytes([b]) for b in range(256) if b not in (0x04, 0xA9)]
    encoding = tiktoken.Encoding(
        name="holes",
        pat_str=GPT2_PATTERN,
        mergeable_ranks={b: i for i, b in enumerate(kept)},
        special_tokens={"<|endoftext|>": len(kept)},
    )
    tok = Tokenizer(encoding)
    for text, ch, code, byte in [
        ("ab\x04c", "'\\x04'", "0004", "0x04"),
        ("café", "'é'", "00E9", "0xa9"),
    ]:
        with pytest.raises(ValueError) as e:
            tok.encode(text)
        assert str(e.value) == (
            f"the character {ch} (U+{code}) cannot be encoded: the vocabulary of 'holes' has no "
            f"token for its byte {byte}; remove or replace it"
        )
    # a lone surrogate is checked as "?" (tiktoken writes it as U+FFFD, whose bytes are there)
    assert tok.decode(tok.encode("x\ud800y")) == "x\ufffdy"
    assert tok.decode(tok.encode("plain text")) == "plain text"


def _with_specials(**kwargs: object) -> Tokenizer:
    specials = {"<|endoftext|>": EOT_ID, "<x>": EOT_ID + 1, "<x>y": EOT_ID + 2, "<z>": EOT_ID + 3}
    encoding = tiktoken.Encoding(
        name="specials", pat_str=GPT2_PATTERN, mergeable_ranks=RANKS, special_tokens=specials
    )
    return Tokenizer(encoding, **kwargs)  # type: ignore[arg-type]


def test_special_tokens_longest_first_and_text_between_kept() -> None:
    tok = _with_specials()
    he = tok.encode("he")
    assert tok.encode("he<x>yhe<x>he<z>he", allow_special=True) == [
        *he,
        EOT_ID + 2,
        *he,
        EOT_ID + 1,
        *he,
        EOT_ID + 3,
        *he,
    ]
    assert tok.encode("<x>y", allow_special=True) == [EOT_ID + 2]
    assert tok.encode("he<x>yhe") == tok.encode("he<x>yhe", allow_special=False)
    assert EOT_ID + 2 not in tok.encode("he<x>yhe")
    always = _with_specials(always_special=["<z>", "<x>y", "<x>"])
    assert always.encode("he<x>y<z>he") == [*he, EOT_ID + 2, EOT_ID + 3, *he]
    assert always.encode("a<|endoftext|>") == always.encode("a<|endoftext|>", allow_special=False)
    assert EOT_ID not in always.encode("a<|endoftext|>")


def test_end_of_turn_ids_and_the_default_name() -> None:
    assert _with_specials().end_of_turn_ids == (EOT_ID,)
    assert _with_specials(end_of_turn_ids=[EOT_ID + 3]).end_of_turn_ids == (EOT_ID + 3,)
    assert _with_specials(end_of_turn_ids=(EOT_ID, EOT_ID + 1)).end_of_turn_ids == (
        EOT_ID,
        EOT_ID + 1,
    )
    assert Tokenizer.from_ranks(RANKS).encoding.name == "numpylm-bpe"


def test_normalization_applies_before_encoding() -> None:
    decomposed = "e\u0301"  # e and a combining acute accent: NFC makes it é
    assert _with_specials(normalization="NFC").encode(decomposed) == _with_specials().encode("é")
    assert _with_specials().encode(decomposed) != _with_specials().encode("é")
    assert _with_specials(normalization="NFKC").encode("ﬁ") == _with_specials().encode("fi")
