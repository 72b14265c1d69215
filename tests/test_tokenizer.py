"""numpylm's tokenizer gives tiktoken's GPT-2 ids, from tiktoken's files or from a Hugging Face
directory (``vocab.json`` + ``merges.txt``), and writes files that ``transformers`` reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm import Tokenizer
from numpylm.tokens.tokenizer import read_merges

SAMPLE = [
    "Hello world",
    "Hello, I am a language model.",
    "  leading spaces, and   runs   of    spaces\t\ttabs  ",
    "trailing space ",
    "Digits: 0 7 42 1234567890 3.14159 -273.15 1,000,000 2026-12-01",
    "Contractions: I'm, you're, he's, we'll, they've, she'd, don't, CAN'T, O'Neil's",
    "Non-ASCII: café, naïve, Zürich, Ångström, São Paulo, Øresund, ½ ¼ ©",
    "Greek and Cyrillic: αβγ δέλτα, Привет, мир!",
    "Emoji: 🙂👍🏽 🚀🔥 👨‍👩‍👧‍👦 ❤️",
    "CJK: 日本語のテキスト、中文文本，한국어 텍스트。",
    "Newlines\nand\r\nWindows line ends\n\n\nthree blank lines\n",
    "Code: def f(x):\n    return x**2  # square\n",
    'Symbols: <tag attr="v"> {a: [1, 2]} @user #hash $5 100% a&b ~/.bashrc',
    "",
    " ",
    "\n",
]


@pytest.fixture(scope="module")
def gpt2(tiktoken_gpt2: None) -> Tokenizer:
    return Tokenizer.gpt2()


@pytest.fixture(scope="module")
def reference(tiktoken_gpt2: None) -> tiktoken.Encoding:
    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="module")
def hf_dir(gpt2_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenAI's files in Hugging Face's layout: ``vocab.json`` is ``encoder.json`` and
    ``merges.txt`` is ``vocab.bpe`` (the same contents under Hugging Face's names)."""
    out = tmp_path_factory.mktemp("hf-tokenizer")
    shutil.copyfile(gpt2_files / "encoder.json", out / "vocab.json")
    shutil.copyfile(gpt2_files / "vocab.bpe", out / "merges.txt")
    return out


@pytest.fixture(scope="module")
def from_hf(hf_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(hf_dir)


@pytest.fixture(scope="module")
def saved_dir(from_hf: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``Tokenizer.save_pretrained`` writes for GPT-2's tokenizer."""
    return from_hf.save_pretrained(tmp_path_factory.mktemp("saved-tokenizer"))


def test_gpt2_known_ids(gpt2: Tokenizer) -> None:
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode("Hello, I am") == [15496, 11, 314, 716]
    assert gpt2.n_vocab == 50257
    assert gpt2.eot_id == 50256


def test_from_pretrained_known_ids(from_hf: Tokenizer) -> None:
    assert from_hf.encode("Hello world") == [15496, 995]
    assert from_hf.encode("Hello, I am") == [15496, 11, 314, 716]
    assert from_hf.n_vocab == 50257
    assert from_hf.eot_id == 50256


@pytest.mark.parametrize("text", SAMPLE)
def test_from_pretrained_matches_tiktoken(
    from_hf: Tokenizer, gpt2: Tokenizer, reference: tiktoken.Encoding, text: str
) -> None:
    expected = reference.encode(text)
    assert from_hf.encode(text) == expected
    assert gpt2.encode(text) == expected


@pytest.mark.parametrize("text", SAMPLE)
def test_decode_encode_round_trip(from_hf: Tokenizer, text: str) -> None:
    assert from_hf.decode(from_hf.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_matches_tiktoken_and_round_trips(
    from_hf: Tokenizer, reference: tiktoken.Encoding, text: str
) -> None:
    """Arbitrary Unicode (any code point but lone surrogates, which UTF-8 cannot hold)."""
    ids = from_hf.encode(text)
    assert ids == reference.encode(text, disallowed_special=())
    assert from_hf.decode(ids) == text


def test_tokens_shows_the_pieces(from_hf: Tokenizer) -> None:
    pieces = from_hf.tokens("Who was the first president?")
    assert pieces == ["Who", " was", " the", " first", " president", "?"]
    assert "".join(from_hf.tokens(SAMPLE[2])) == SAMPLE[2]


def test_endoftext_in_user_text_is_plain_text(
    from_hf: Tokenizer, reference: tiktoken.Encoding
) -> None:
    """The documented choice: user text cannot produce the control token by accident."""
    text = "before<|endoftext|>after"
    ids = from_hf.encode(text)
    assert from_hf.eot_id not in ids
    assert ids == reference.encode(text, disallowed_special=())
    assert from_hf.decode(ids) == text


def test_endoftext_with_allow_special_is_one_token(from_hf: Tokenizer) -> None:
    assert from_hf.encode("<|endoftext|>", allow_special=True) == [50256]
    ids = from_hf.encode("a<|endoftext|>b", allow_special=True)
    assert ids == [*from_hf.encode("a"), 50256, *from_hf.encode("b")]
    assert from_hf.decode(ids) == "a<|endoftext|>b"


def test_save_pretrained_round_trip(from_hf: Tokenizer, hf_dir: Path, saved_dir: Path) -> None:
    # The files written are OpenAI's own, token for token and merge for merge.
    saved_vocab = json.loads((saved_dir / "vocab.json").read_text(encoding="utf-8"))
    assert saved_vocab == json.loads((hf_dir / "vocab.json").read_text(encoding="utf-8"))
    assert read_merges(saved_dir / "merges.txt") == read_merges(hf_dir / "merges.txt")
    reloaded = Tokenizer.from_pretrained(saved_dir)
    for text in SAMPLE:
        assert reloaded.encode(text) == from_hf.encode(text)


def test_saved_files_read_by_transformers(from_hf: Tokenizer, saved_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2Tokenizer.from_pretrained(saved_dir)
    for text in SAMPLE:
        assert hf(text)["input_ids"] == from_hf.encode(text), text
    assert hf.convert_tokens_to_ids("<|endoftext|>") == from_hf.eot_id


def test_small_fixture_tokenizer_matches_transformers() -> None:
    """The fixture's 263-token BPE (written with transformers' byte alphabet, not numpylm's)."""
    transformers = pytest.importorskip("transformers")
    directory = Path(__file__).parent / "fixtures" / "tiny-gpt2"
    ours = Tokenizer.from_pretrained(directory)
    hf = transformers.GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    assert ours.n_vocab == 263
    for text in SAMPLE:
        assert ours.encode(text) == hf(text)["input_ids"], text
        assert ours.decode(ours.encode(text)) == text
