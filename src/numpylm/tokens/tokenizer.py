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

import heapq
import operator
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tiktoken

from ..io import checkpoint
from ..io.checkpoint import CheckpointError

EOT = "<|endoftext|>"

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""How GPT-2 splits text into chunks before BPE: contractions, letters, digits, other symbols,
each with at most one leading space, and whitespace. Merges never cross a chunk boundary."""

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"

# Unicode's White_Space characters: what ``\s`` matches in tiktoken's regex engine (Python's
# str.isspace differs, e.g. for U+001C..U+001F, so it is spelled out).
_WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
LONG_WHITESPACE = 100_000
"""Runs of at least this many whitespace characters are split into pieces by numpylm rather
than by tiktoken, whose regex engine gives up on a run of about a million (see ``encode``)."""


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


_ALPHABET = frozenset(bytes_to_unicode().values())


def _to_bytes(token: str) -> bytes:
    inverse = _unicode_to_bytes()
    try:
        return bytes(inverse[c] for c in token)
    except KeyError as e:
        raise ValueError(f"token {token!r} has a character outside GPT-2's byte alphabet") from e


def _to_text(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


class ChatFormat(Protocol):
    """What a tokenizer needs of a chat template (``numpylm.tokens.chat_template.ChatTemplate``
    is the one numpylm builds from a model's files)."""

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool) -> str:
        """The conversation as the template writes it."""
        ...

    def pieces(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool
    ) -> list[tuple[str, bool]]:
        """The same text in pieces ``(text, from_template)``: special tokens count as special
        only in pieces the template wrote; a special token's text inside a message comes as a
        piece of its own with ``from_template`` False."""
        ...


class Tokenizer:
    """A byte-level BPE tokenizer backed by a ``tiktoken.Encoding``.

    Build one with ``Tokenizer.gpt2()``, ``Tokenizer.from_pretrained(dir_or_hub_id)``, or
    ``Tokenizer.from_ranks(...)`` (what numpylm's own BPE trainer returns); a pretrained model's
    tokenizer comes from ``numpylm.tokens.pretrained`` (a GGUF file or a ``tokenizer.json``).

    Args:
        encoding: the BPE; its special tokens must include ``<|endoftext|>``.
        chat_template: how the model's conversations are written (``apply_chat_template``).
        end_of_turn_ids: the ids that end the model's answer (default: ``eot_id`` alone).
        always_special: special tokens matched even in plain text, as Hugging Face matches its
            "added tokens" that are not marked special (Qwen2's ``<tool_call>``).
        normalization: a ``unicodedata`` form applied to text before encoding (Qwen2: "NFC").
    """

    def __init__(
        self,
        encoding: tiktoken.Encoding,
        *,
        chat_template: ChatFormat | None = None,
        end_of_turn_ids: Sequence[int] = (),
        always_special: Iterable[str] = (),
        normalization: str | None = None,
    ) -> None:
        if EOT not in encoding.special_tokens_set:
            raise ValueError(f"the encoding {encoding.name!r} has no {EOT} token")
        self.encoding = encoding
        self._n_vocab = int(encoding.n_vocab)  # read per decoded token: kept as a plain int
        self.chat_template = chat_template
        self._end_of_turn = tuple(end_of_turn_ids) or (self.eot_id,)
        self._normalization = normalization
        self._special_ids = {
            s: encoding.encode_single_token(s) for s in encoding.special_tokens_set
        }
        self._special_re = _alternation(encoding.special_tokens_set)
        self._always_re = _alternation(set(always_special))
        # Bytes with no token: text containing them cannot be encoded (tiktoken would panic).
        ranks = encoding._mergeable_ranks
        self._present = bytes(b for b in range(256) if bytes([b]) in ranks)

    def __repr__(self) -> str:
        return f"Tokenizer({self.encoding.name!r}, n_vocab={self.n_vocab})"

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def gpt2(cls) -> Tokenizer:
        """GPT-2's tokenizer: tiktoken's ``gpt2`` encoding (50257 tokens).

        tiktoken downloads its files once and caches them (see ``TIKTOKEN_CACHE_DIR``).

        Raises:
            CheckpointError: the files are not cached and cannot be downloaded (offline).
        """
        try:
            return cls(tiktoken.get_encoding("gpt2"))
        except OSError as e:  # requests' network errors are OSErrors too
            raise checkpoint.CheckpointError(
                f"could not get GPT-2's tokenizer ({type(e).__name__}): tiktoken downloads it "
                "once and caches it in TIKTOKEN_CACHE_DIR. Connect once, or use a model "
                "directory that has its own vocab.json and merges.txt (train one offline with "
                "--tokenizer bpe:1024)"
            ) from e

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

        Raises:
            FileNotFoundError: a file is missing.
            CheckpointError: a file is a directory, a pipe or a device (``regular_file``).
            CheckpointError: a file is not what GPT-2's tokenizer files are (see ``read_merges``
                and ``ranks_from_vocab``): the message names the file and what is wrong.
        """
        directory = checkpoint.resolve(name_or_path)
        vocab_path, merges_path = directory / VOCAB_FILE, directory / MERGES_FILE
        for path in (vocab_path, merges_path):
            checkpoint.regular_file(
                path,
                path.name,
                f"{directory} has no {path.name}, and a GPT-2 tokenizer needs {VOCAB_FILE} and "
                f"{MERGES_FILE}",
            )
        vocab = checkpoint.read_json(vocab_path)
        merges = read_merges(merges_path)
        ranks = ranks_from_vocab(vocab, merges, vocab_path, merges_path)
        # Checked above as tiktoken needs it: it panics (a BaseException) on shared ids.
        return cls.from_ranks(ranks, name=directory.name)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``vocab.json`` + ``merges.txt`` (GPT-2's format, which ``transformers``'
        ``GPT2Tokenizer`` reads too) and a small ``tokenizer_config.json``.

        Raises:
            ValueError: the tokenizer is not laid out as GPT-2's (its only special token
                ``<|endoftext|>``, right after the byte pairs), which those files cannot hold.
        """
        out = Path(directory)
        ranks = self.encoding._mergeable_ranks
        if self._special_ids != {EOT: len(ranks)} or self._normalization is not None:
            raise ValueError(
                f"save_pretrained writes GPT-2's vocab.json + merges.txt, which cannot hold the "
                f"tokenizer {self.encoding.name!r} (its special tokens or normalization differ "
                "from GPT-2's); keep the files it was read from"
            )
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
        return self._n_vocab

    @property
    def eot_id(self) -> int:
        """The id of ``<|endoftext|>``, GPT-2's end-of-text (and start-of-text) token."""
        return int(self.encoding.eot_token)

    @property
    def end_of_turn_ids(self) -> tuple[int, ...]:
        """The ids that end the model's turn: generation stops at any of them (GPT-2:
        ``<|endoftext|>``; a ChatML model: ``<|im_end|>`` and its end-of-sequence token)."""
        return self._end_of_turn

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Text -> token ids. A special token's text (``<|endoftext|>``, ``<|im_start|>``) in
        ``text`` is plain text unless ``allow_special`` is True, when it becomes its one id.

        Raises:
            ValueError: ``text`` holds a character whose bytes the vocabulary cannot write
                (SmolLM2's has no token for the byte 0x04, say).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        matcher = self._special_re if allow_special else self._always_re
        if matcher is None:
            return self._encode_plain(text)
        # The text between special tokens is encoded alone, as tiktoken and Hugging Face do.
        ids: list[int] = []
        start = 0
        for match in matcher.finditer(text):
            ids += self._encode_plain(text[start : match.start()])
            ids.append(self._special_ids[match.group()])
            start = match.end()
        return ids + self._encode_plain(text[start:])

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = True,
        *,
        allow_special: bool = False,
    ) -> list[int] | str:
        """A conversation written in the model's chat template: its ids (``tokenize=False``:
        the text, as ``transformers``' ``apply_chat_template`` renders it).

        ``messages``: dicts with ``role`` ("system", "user", "assistant") and ``content``.
        ``add_generation_prompt`` ends the text with the start of the assistant's turn.
        Special tokens the template writes are special; the same text inside a message is
        plain text unless ``allow_special`` is True (``transformers``:
        ``sanitize_control_tokens=True`` unless allowed), so a message cannot end its turn.

        Raises:
            ValueError: the tokenizer has no chat template, or the template refused the
                conversation (its ``raise_exception``, or the sandbox stopped it).
        """
        if self.chat_template is None:
            raise ValueError(
                f"the tokenizer {self.encoding.name!r} has no chat template: load a model "
                "whose files carry one (tokenizer.chat_template in GGUF, chat_template in "
                "tokenizer_config.json), or write the prompt yourself"
            )
        if not tokenize:
            return self.chat_template.render(messages, add_generation_prompt)
        if allow_special:
            text = self.chat_template.render(messages, add_generation_prompt)
            return self.encode(text, allow_special=True)
        ids: list[int] = []
        for text, from_template in self.chat_template.pieces(messages, add_generation_prompt):
            ids += self.encode(text, allow_special=from_template)
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        """Text with no special token in it -> ids."""
        if self._normalization is not None:
            text = unicodedata.normalize(self._normalization, text)  # type: ignore[arg-type]
        if len(self._present) < 256:
            self._check_encodable(text)
        try:
            # encode(), not encode_ordinary(): only encode() turns a regex failure into a
            # ValueError (encode_ordinary panics); no special token is matched either way.
            return list(self.encoding.encode(text, disallowed_special=()))
        except ValueError:
            # tiktoken's regex engine gives up on a run of about a million whitespace
            # characters (its backtracking stack is full); numpylm then cuts the text itself,
            # which is proven right for GPT-2's pattern only (see _encode_long).
            if _LONG_RUN.search(text) is None:
                raise
            if self.encoding._pat_str != GPT2_PATTERN:
                raise ValueError(
                    f"the text has a run of {LONG_WHITESPACE:,} or more whitespace characters, "
                    f"too long for tiktoken with the tokenizer {self.encoding.name!r}; shorten "
                    "the run"
                ) from None
        return self._encode_long(text)

    def _check_encodable(self, text: str) -> None:
        raw = text.encode("utf-8", errors="replace")
        if not raw.translate(None, delete=self._present):
            return
        for ch in text:
            missing = ch.encode("utf-8", errors="replace").translate(None, delete=self._present)
            if missing:
                raise ValueError(
                    f"the character {ch!r} (U+{ord(ch):04X}) cannot be encoded: the vocabulary "
                    f"of {self.encoding.name!r} has no token for its byte {missing[0]:#04x}; "
                    "remove or replace it"
                )

    def _encode_long(self, text: str) -> list[int]:
        r"""``encode(text)`` for text with whitespace runs too long for tiktoken's regex: each run
        of at least ``LONG_WHITESPACE`` is cut out and encoded here, the text between by tiktoken.

        Why the cuts cannot change the tokens: tiktoken cuts text into chunks with
        ``GPT2_PATTERN``, leftmost alternative first, then encodes each chunk on its own. For a
        whitespace run ``text[a:b]`` (the characters around it are not whitespace) of length
        two or more:

        - a chunk starts at ``a``: no alternative matches a non-space followed by a space;
        - that chunk is ``text[a:b-1]`` (``text[a:b]`` at the end of the text): the word
          alternatives fail on two spaces, and ``\s+(?!\S)`` takes the run but its last
          character, which must not be followed by a non-space;
        - the next chunk starts at ``b-1`` (the last space joins the word after it, or stands
          alone), and a chunk from there depends only on ``text[b-1:]`` (no lookbehind);
        - the chunks before ``a`` are the chunks of ``text[:a]`` alone: every alternative that
          looks at ``text[a]``, a space, treats it as it treats the end of the text.

        So ``encode(text[:a]) + bpe(text[a:b-1]) + encode(text[b-1:])`` is tiktoken's answer.
        The long chunk is merged by ``_byte_pair_merge``, which gives tiktoken's merges exactly.
        """
        ids: list[int] = []
        start = 0
        ranks = self.encoding._mergeable_ranks
        for run in _LONG_RUN.finditer(text):
            a, b = run.span()
            stop = b if b == len(text) else b - 1
            ids += self.encoding.encode_ordinary(text[start:a])
            ids += _byte_pair_merge(ranks, text[a:stop].encode("utf-8"))
            start = stop
        return ids + self.encoding.encode_ordinary(text[start:])

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text. Bytes that do not form complete UTF-8 characters (a character
        split across tokens, cut off) become U+FFFD.

        ``ids``: a sequence of integers (Python's or NumPy's, or a 1-D integer array), each in
        ``0 .. n_vocab - 1``. Raises TypeError for anything else (a single id, floats, bools,
        strings) and ValueError for an id outside the vocabulary.
        """
        return str(self.encoding.decode(self._checked_ids(ids, "decode"), errors="replace"))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Token ids -> the raw bytes they stand for (no UTF-8 decoding); ``ids`` as for
        ``decode``."""
        return bytes(self.encoding.decode_bytes(self._checked_ids(ids, "decode_bytes")))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (``<|endoftext|>``: its 13 characters).

        ``token_id``: an integer (Python's or NumPy's) in ``0 .. n_vocab - 1``; TypeError for
        anything else, ValueError outside the vocabulary."""
        i = token_id if type(token_id) is int else _as_id(token_id, "token_bytes", "one id")
        if not 0 <= i < self._n_vocab:
            raise self._out_of_range(i, "token_bytes")
        try:
            return bytes(self.encoding.decode_single_token_bytes(i))
        except KeyError:  # an encoding whose ids have gaps (not numpylm's own)
            raise self._out_of_range(i, "token_bytes") from None

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

    def _checked_ids(self, ids: Iterable[int], caller: str) -> list[int]:
        """``ids`` as a list of Python ints, each checked to be a token id (see ``decode``).
        Called per token when streaming, so the common cases are cheap: a list of ints costs
        a type check per id and one min and max; an array is checked by NumPy at once."""
        n = self._n_vocab
        if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu" and ids.ndim == 1:
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                raise self._out_of_range(int(ids[(ids < 0) | (ids >= n)][0]), caller)
            return list(ids.tolist())
        if isinstance(ids, np.ndarray) and ids.dtype.kind != "O":
            what = f"an array of dtype {ids.dtype}" if ids.ndim == 1 else f"a {ids.ndim}-D array"
            raise TypeError(
                f"{caller} takes a sequence of integer token ids, got {what}: pass a 1-D integer "
                "array (ids.astype(np.int64) if its values are whole numbers)"
            )
        if isinstance(ids, (str, bytes, bytearray)):
            raise TypeError(
                f"{caller} takes a sequence of token ids, got {type(ids).__name__} "
                f"{_short(ids)}; to turn text into ids, use encode()"
            )
        try:
            items = iter(ids)
        except TypeError:
            raise TypeError(
                f"{caller} takes a sequence of token ids, got {type(ids).__name__} "
                f"{_short(ids)}; wrap one id in a list"
            ) from None
        out = [
            i if type(i) is int else _as_id(i, caller, f"position {p}") for p, i in enumerate(items)
        ]
        if out and (min(out) < 0 or max(out) >= n):
            raise self._out_of_range(next(i for i in out if not 0 <= i < n), caller)
        return out

    def _out_of_range(self, token_id: int, caller: str) -> ValueError:
        return ValueError(
            f"{caller}: token id {token_id} is not in the vocabulary, whose ids are "
            f"0..{self._n_vocab - 1} (n_vocab={self._n_vocab})"
        )


def _alternation(words: Iterable[str]) -> re.Pattern[str] | None:
    """A regex matching any of ``words``, the longest first where one starts another (as
    Hugging Face matches its added tokens); None for no words."""
    ordered = sorted(words, key=lambda w: (-len(w), w))
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


_LONG_RUN = re.compile(f"(?<![{_WHITESPACE}])[{_WHITESPACE}]{{{LONG_WHITESPACE},}}")
# The lookbehind starts a match only where a run starts, so the search is linear in the text.


def _byte_pair_merge(ranks: dict[bytes, int], piece: bytes) -> list[int]:
    """One chunk's tokens, merged as tiktoken merges them: while some adjacent pair of parts
    joins into a token, join the pair whose token has the lowest rank (the leftmost of equal
    ones). tiktoken rescans every pair after each join, which is quadratic in a long chunk; a
    heap of the pairs gives the same joins in the same order in O(n log n) time.

    A chunk that is itself a token is that token, as in tiktoken (which checks it first).
    """
    if piece in ranks:
        return [ranks[piece]]
    n = len(piece)
    following = list(range(1, n + 1))  # following[i]: where the part starting at i ends
    preceding = list(range(-1, n - 1))  # preceding[i]: where the part before it starts
    heap = [(r, i) for i in range(n - 1) if (r := ranks.get(piece[i : i + 2])) is not None]
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = following[i]
        # An entry is stale when its part was absorbed or its pair has grown since: its bytes
        # then differ, and distinct bytes have distinct ranks.
        if j >= n or preceding[j] != i or ranks.get(piece[i : following[j]]) != rank:
            continue
        end = following[j]
        following[i], preceding[j] = end, -2  # -2: j no longer starts a part
        if end < n:
            preceding[end] = i
            if (r := ranks.get(piece[i : following[end]])) is not None:
                heapq.heappush(heap, (r, i))
        if i > 0 and (r := ranks.get(piece[preceding[i] : end])) is not None:
            heapq.heappush(heap, (r, preceding[i]))
    ids, i = [], 0
    while i < n:
        ids.append(ranks[piece[i : following[i]]])
        i = following[i]
    return ids


def _as_id(value: Any, caller: str, where: str) -> int:
    """A token id that is not a Python int: NumPy integers (and anything else with
    ``__index__``) are accepted, bools and floats refused rather than rounded."""
    if not isinstance(value, (bool, np.bool_)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(
        f"{caller}: token ids are integers, got {type(value).__name__} {_short(value)} "
        f"({where}); pass whole numbers (a float array: ids.astype(np.int64))"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_merges(path: Path) -> list[tuple[str, str]]:
    """Read GPT-2's ``merges.txt``: an optional ``#version`` line, then one merge per line, two
    tokens in GPT-2's byte alphabet (``bytes_to_unicode``) separated by a space.

    Raises:
        CheckpointError: the file is not UTF-8 text, or a line is not a merge (naming the file
            and the line).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(
            f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start} "
            "cannot be decoded): it is not a merges.txt, or it is corrupt"
        ) from None
    merges = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise CheckpointError(
                f"{path}, line {n}: a merge is two tokens separated by one space, found {line!r}"
            )
        for part in parts:
            if not set(part) <= _ALPHABET:
                raise CheckpointError(
                    f"{path}, line {n}: the token {part!r} has a character outside GPT-2's byte "
                    "alphabet, so it stands for no bytes; the file is corrupt"
                )
        merges.append((parts[0], parts[1]))
    return merges


def ranks_from_vocab(
    vocab: dict[str, int],
    merges: Sequence[tuple[str, str]],
    vocab_file: str | os.PathLike[str] = VOCAB_FILE,
    merges_file: str | os.PathLike[str] = MERGES_FILE,
) -> dict[bytes, int]:
    """GPT-2 ``vocab.json`` + merges -> tiktoken's ranks (token bytes -> id).

    In GPT-2's files the 256 single bytes come first and merge ``i`` creates token ``256 + i``,
    so a token's id is also its merge priority: tiktoken needs exactly that. The function checks
    it rather than trusting it: every id a whole number, each token's own, the ids exactly
    ``0 .. 255 + len(merges)`` with every single byte among them, merge ``i`` making token
    ``256 + i``, and ``<|endoftext|>`` (when listed) the id after them. tiktoken does not
    check: two tokens sharing an id make it panic, a missing byte makes it panic mid-encode.

    Raises:
        CheckpointError: naming ``vocab_file`` (or ``merges_file``) and what is wrong.
    """
    ranks: dict[bytes, int] = {}
    owner: dict[int, str] = {}
    eot_id = None
    for token, i in vocab.items():
        if type(i) is not int:  # not bool (an int to Python), not 12.0
            raise CheckpointError(
                f"{vocab_file}: token {token!r} has the id {i!r}; ids are whole numbers"
            )
        if i < 0:
            raise CheckpointError(f"{vocab_file}: token {token!r} has the negative id {i}")
        if i in owner:
            raise CheckpointError(
                f"{vocab_file}: tokens {owner[i]!r} and {token!r} share the id {i}; each token "
                "needs its own id"
            )
        owner[i] = token
        if token == EOT:
            eot_id = i
            continue
        if not token or not set(token) <= _ALPHABET:
            raise CheckpointError(
                f"{vocab_file}: the token {token!r} is not a string of GPT-2's byte alphabet "
                "(bytes_to_unicode), so it stands for no bytes; the file is corrupt"
            )
        ranks[_to_bytes(token)] = i
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise CheckpointError(
            f"{vocab_file} has no token for the byte {missing[0]} "
            f"({bytes_to_unicode()[missing[0]]!r}) and {len(missing) - 1} more: a byte-level "
            "vocabulary holds all 256, so that any text can be encoded"
        )
    if len(ranks) != 256 + len(merges):
        raise CheckpointError(
            f"{vocab_file} has {len(ranks)} tokens besides {EOT}, but 256 bytes + {len(merges)} "
            f"merges in {merges_file} make a different number: the two files do not belong "
            "together"
        )
    top = max(ranks.values())
    if top >= len(ranks):
        raise CheckpointError(
            f"{vocab_file}: token {owner[top]!r} has the id {top}, but its {len(ranks)} tokens "
            f"should have the ids 0..{len(ranks) - 1}, with no gaps"
        )
    for i, (a, b) in enumerate(merges):
        try:
            merged = _to_bytes(a) + _to_bytes(b)
        except ValueError as e:
            raise CheckpointError(f"{merges_file}: merge {i + 1}: {e}") from None
        if ranks.get(merged) != 256 + i:
            raise CheckpointError(
                f"{merges_file}: merge {i + 1} ({a!r} + {b!r}) should create token {256 + i} but "
                f"{vocab_file} gives {ranks.get(merged)}: the ids do not follow the merge order"
            )
    if eot_id is not None and eot_id != len(ranks):
        raise CheckpointError(
            f"{vocab_file}: {EOT} has the id {eot_id}, but it must come right after the "
            f"{len(ranks)} byte-pair tokens, as id {len(ranks)}"
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
