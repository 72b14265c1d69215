"""Text <-> token ids, with GPT-2's byte-level BPE.

A language model does not read letters or words but *tokens*: pieces of words, each with an id.
GPT-2's tokenizer works on the UTF-8 bytes of the text, so any string can be encoded: text is
first split into chunks (words with their leading space, runs of digits, punctuation,
whitespace), then each chunk's bytes are merged pairwise, most frequent pair first, by a list of
learned merges ("byte pair encoding"). ``tiktoken`` does that work fast; this class is the
readable face of it.

Special tokens: ``<|endoftext|>`` (id ``eot_id``) separates documents and marks the end of an
answer. Text a user writes is always plain text: ``encode("<|endoftext|>")`` gives the ids of
those 13 characters, so no input can smuggle in a control token. Code that means the special
token appends ``eot_id`` itself, or passes ``allow_special=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import tiktoken

from . import checkpoint

EOT = "<|endoftext|>"

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""How GPT-2 splits text into chunks before BPE: contractions, letters, digits, other symbols,
each with at most one leading space, and whitespace. Merges never cross a chunk boundary."""

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each of the 256 byte values to a printable character.

    ``vocab.json`` and ``merges.txt`` are text files, so they cannot hold raw bytes such as a
    newline or a lone UTF-8 continuation byte. GPT-2 writes each byte as a visible character:
    printable Latin-1 bytes stand for themselves, and the rest are moved to code points from 256
    up (a space, byte 32, becomes ``Ġ``; a newline, byte 10, becomes ``Ċ``).
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    """The inverse of ``bytes_to_unicode``, built once (it is used for every token of a vocab)."""
    return {c: b for b, c in bytes_to_unicode().items()}


def _to_bytes(token: str) -> bytes:
    inverse = _unicode_to_bytes()
    try:
        return bytes(inverse[c] for c in token)
    except KeyError as e:
        raise ValueError(f"token {token!r} has a character outside GPT-2's byte alphabet") from e


def _to_text(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


class Tokenizer:
    """A byte-level BPE tokenizer backed by a ``tiktoken.Encoding``.

    Build one with ``Tokenizer.gpt2()``, ``Tokenizer.from_pretrained(dir_or_hub_id)``, or
    ``Tokenizer.from_ranks(...)`` (what numpylm's own BPE trainer returns).
    """

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        if EOT not in encoding.special_tokens_set:
            raise ValueError(f"the encoding {encoding.name!r} has no {EOT} token")
        self.encoding = encoding

    def __repr__(self) -> str:
        return f"Tokenizer({self.encoding.name!r}, n_vocab={self.n_vocab})"

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def gpt2(cls) -> Tokenizer:
        """GPT-2's tokenizer: tiktoken's ``gpt2`` encoding (50257 tokens).

        tiktoken downloads its files once and caches them (see ``TIKTOKEN_CACHE_DIR``).
        """
        return cls(tiktoken.get_encoding("gpt2"))

    @classmethod
    def from_ranks(
        cls, ranks: dict[bytes, int], name: str = "numpylm-bpe", pattern: str = GPT2_PATTERN
    ) -> Tokenizer:
        """A tokenizer from BPE ranks (token bytes -> id, lower ids merge first), with
        ``<|endoftext|>`` as the id after the last rank, as in GPT-2."""
        encoding = tiktoken.Encoding(
            name=name,
            pat_str=pattern,
            mergeable_ranks=ranks,
            special_tokens={EOT: len(ranks)},
        )
        return cls(encoding)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str]) -> Tokenizer:
        """Load a GPT-2 style tokenizer from ``vocab.json`` + ``merges.txt``.

        ``name_or_path`` is a local directory or a Hugging Face Hub id. The files are the same
        BPE as OpenAI's ``encoder.json`` + ``vocab.bpe``; the tiktoken encoding is built locally
        from them, so nothing but the Hub is ever contacted.
        """
        directory = checkpoint.resolve(name_or_path)
        vocab_path, merges_path = directory / VOCAB_FILE, directory / MERGES_FILE
        for path in (vocab_path, merges_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{directory} has no {path.name}; a GPT-2 tokenizer needs {VOCAB_FILE} and "
                    f"{MERGES_FILE}"
                )
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        merges = read_merges(merges_path)
        return cls.from_ranks(ranks_from_vocab(vocab, merges), name=directory.name)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``vocab.json`` + ``merges.txt`` (GPT-2's format, which ``transformers``'
        ``GPT2Tokenizer`` reads too) and a small ``tokenizer_config.json``."""
        out = Path(directory)
        ranks = self.encoding._mergeable_ranks
        vocab = {_to_text(token): rank for token, rank in ranks.items()}
        vocab[EOT] = self.eot_id
        merges = [f"{_to_text(a)} {_to_text(b)}" for a, b in merges_from_ranks(ranks)]
        checkpoint.write_json(out / VOCAB_FILE, vocab)
        text = "#version: 0.2\n" + "".join(m + "\n" for m in merges)
        checkpoint.atomic_write_bytes(out / MERGES_FILE, text.encode("utf-8"))
        checkpoint.write_json(
            out / "tokenizer_config.json",
            {
                "tokenizer_class": "GPT2Tokenizer",
                "bos_token": EOT,
                "eos_token": EOT,
                "unk_token": EOT,
                "add_prefix_space": False,
                "model_max_length": 1024,
            },
        )
        return out

    # --- use -------------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        """Number of token ids (the model's ``vocab_size`` must be at least this)."""
        return int(self.encoding.n_vocab)

    @property
    def eot_id(self) -> int:
        """The id of ``<|endoftext|>``, GPT-2's end-of-text (and start-of-text) token."""
        return int(self.encoding.eot_token)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Text -> token ids. ``<|endoftext|>`` in ``text`` is plain text unless
        ``allow_special`` is True, when it becomes the single id ``eot_id``."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        if allow_special:
            return list(self.encoding.encode(text, allowed_special="all"))
        return list(self.encoding.encode(text, disallowed_special=()))

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text. Bytes that do not form complete UTF-8 characters (a character
        split across tokens, cut off) become U+FFFD."""
        return str(self.encoding.decode([int(i) for i in ids], errors="replace"))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Token ids -> the raw bytes they stand for (no UTF-8 decoding)."""
        return bytes(self.encoding.decode_bytes([int(i) for i in ids]))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (``<|endoftext|>``: its 13 characters)."""
        return bytes(self.encoding.decode_single_token_bytes(int(token_id)))

    def token_text(self, token_id: int) -> str:
        """One token as text to show: its bytes decoded, where a piece of a multi-byte
        character (part of an emoji, say) shows as U+FFFD. The one place numpylm turns a token
        into display text: streaming, the trace and the pictures all use it."""
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def tokens(self, text: str) -> list[str]:
        """The pieces ``text`` is cut into, as strings (``token_text`` of each): ``tokens("Who
        was the first president?")`` -> ``['Who', ' was', ' the', ' first', ' president', '?']``
        with GPT-2's vocabulary."""
        return [self.token_text(i) for i in self.encode(text)]


def read_merges(path: Path) -> list[tuple[str, str]]:
    """Read GPT-2's ``merges.txt``: an optional ``#version`` line, then one merge per line."""
    merges = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: a merge is two tokens separated by a space: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def ranks_from_vocab(vocab: dict[str, int], merges: Sequence[tuple[str, str]]) -> dict[bytes, int]:
    """GPT-2 ``vocab.json`` + merges -> tiktoken's ranks (token bytes -> id).

    In GPT-2's files the 256 single bytes come first and merge ``i`` creates token ``256 + i``,
    so a token's id is also its merge priority: tiktoken needs exactly that. The function checks
    it rather than trusting it.
    """
    ranks = {_to_bytes(tok): i for tok, i in vocab.items() if tok != EOT}
    if len(ranks) != 256 + len(merges):
        raise ValueError(
            f"vocab.json has {len(ranks)} tokens besides {EOT}, but 256 bytes + {len(merges)} "
            "merges make a different number: the two files do not belong together"
        )
    for i, (a, b) in enumerate(merges):
        merged = _to_bytes(a) + _to_bytes(b)
        if ranks.get(merged) != 256 + i:
            raise ValueError(
                f"merge {i + 1} ({a!r} + {b!r}) should create token {256 + i} but vocab.json "
                f"gives {ranks.get(merged)}: the ids do not follow the merge order"
            )
    return ranks


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover the merge list from ranks: each multi-byte token is made of the two tokens that
    byte pair encoding, using only the merges ranked before it, leaves its bytes in."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            # merge the adjacent pair with the lowest rank, as encoding does
            pair_ranks = [ranks.get(parts[j] + parts[j + 1], rank) for j in range(len(parts) - 1)]
            j = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
            if pair_ranks[j] >= rank:
                raise ValueError(f"token {token!r} cannot be built from lower-ranked merges")
            parts[j : j + 2] = [parts[j] + parts[j + 1]]
        merges.append((parts[0], parts[1]))
    return merges
