"""The tokenizers of pretrained models: byte-level BPE read from a GGUF file or a Hugging Face
``tokenizer.json``, into numpylm's ``Tokenizer`` (which runs on ``tiktoken``).

Both formats store the same things: the tokens, as strings in GPT-2's byte alphabet
(``bytes_to_unicode``: a space is ``Ġ``), the merges in the order they were learned, the
special tokens, and the name of the pre-tokenizer (how text is cut into chunks before merging).

One difference needs care. Hugging Face and llama.cpp rank a *pair* of tokens: a merge ``a b``
has the rank of its line in the merge list. tiktoken ranks the *merged bytes*: the token ``ab``
has a rank, which is also its id. The two agree when

1. each merge makes a different token, and those tokens' ids grow with the merge order (so a
   token's id can be its rank; special tokens, which sit at the lowest ids, are left out), and
2. every token, encoded alone, comes out as itself under the pair ranks.

(2) matters because tiktoken may join two pieces whose joined bytes are a token even when the
pair is not a listed merge. Suppose it does, in the middle of some text, joining ``x`` and
``y`` into ``t``: up to then both algorithms made the same joins, and the joins inside ``t``'s
bytes are those that encoding ``t`` alone makes, which by (2) end in ``t``'s own merge, never
in the pieces ``x``, ``y``. So no such join happens, and the ids are equal on every text. The
reader checks both and refuses a vocabulary that fails them, naming the token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken

from ..io.checkpoint import CheckpointError, read_json
from .chat_template import ChatTemplate
from .tokenizer import EOT, GPT2_PATTERN, Tokenizer, bytes_to_unicode

SMOLLM_PATTERN = r"""\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
r"""SmolLM2's chunks. Its tokenizer first cuts every digit out on its own, then applies GPT-2's
pattern to the text between. One regex does both: ``\p{N}`` takes a digit; GPT-2's digit
alternative is gone; and a whitespace run before a digit is taken whole, as GPT-2's
``\s+(?!\S)`` takes a run at the end of a text (``(?![^\s\p{N}])``: no non-space non-digit
follows)."""

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's chunks (its tokenizer.json's regex): single digits, a word may take one symbol
before it, and runs of line breaks stay together."""

PRE_TOKENIZERS = {"gpt-2": GPT2_PATTERN, "smollm": SMOLLM_PATTERN, "qwen2": QWEN2_PATTERN}
"""The pre-tokenizers numpylm knows, by llama.cpp's name (GGUF's ``tokenizer.ggml.pre``)."""

NORMALIZATION = {"qwen2": "NFC"}
"""Unicode normalization applied before the chunks (Qwen2's tokenizer.json has an NFC
normalizer; llama.cpp skips it, numpylm follows the model's own tokenizer)."""

# GGUF token types (llama.cpp's llama_token_type).
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4


@dataclass
class Vocabulary:
    """What a byte-level BPE file holds, before it becomes a ``Tokenizer``.

    ``tokens[i]`` is the text of id ``i`` (in GPT-2's byte alphabet unless it is special or
    added); ``special`` the ids of control tokens (special only where allowed); ``added`` the
    ids of added tokens matched in any text; ``merges`` in learned order.
    """

    source: str
    tokens: list[str]
    merges: list[tuple[str, str]]
    pre: str
    special: set[int] = field(default_factory=set)
    added: set[int] = field(default_factory=set)
    normalization: str | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    chat_template: str | None = None


def tokenizer_from_gguf(path_or_reader: str | os.PathLike[str] | Any) -> Tokenizer:
    """The tokenizer of a GGUF file (a path, or a ``gguf.GGUFReader`` already open: reading a
    file's header takes seconds, so the model loader shares its reader).

    Raises:
        CheckpointError: the file's tokenizer is missing, not a byte-level BPE, or corrupt;
            the message names the file and the key.
    """
    return build_tokenizer(read_gguf_vocabulary(path_or_reader))


def tokenizer_from_hf(directory: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer of a Hugging Face model directory: ``tokenizer.json``, with the chat
    template and special tokens of ``tokenizer_config.json`` (or ``chat_template.jinja``).

    Raises:
        FileNotFoundError: there is no ``tokenizer.json``.
        CheckpointError: a file is corrupt or holds what numpylm does not implement (naming
            the file and the key).
    """
    return build_tokenizer(read_hf_vocabulary(directory))


def read_gguf_vocabulary(path_or_reader: str | os.PathLike[str] | Any) -> Vocabulary:
    """A GGUF file's tokenizer keys (``tokenizer.ggml.*``, ``tokenizer.chat_template``)."""
    from gguf import GGUFReader  # imported here: only GGUF files need it

    reader: Any = path_or_reader
    if isinstance(path_or_reader, (str, os.PathLike)):
        try:
            reader = GGUFReader(path_or_reader)
        except (ValueError, OSError) as e:
            raise CheckpointError(f"{path_or_reader}: not a readable GGUF file ({e})") from None
    source = str(getattr(reader.data, "filename", None) or "the GGUF file")
    fields = reader.fields

    def value(key: str, kind: type, required: bool = False, array: bool = False) -> Any:
        f = fields.get(key)
        if f is None:
            if required:
                raise CheckpointError(f"{source} has no {key}: it holds no tokenizer numpylm reads")
            return None
        try:
            got = f.contents()
        except UnicodeDecodeError:
            raise CheckpointError(f"{source}: {key} is not UTF-8 text") from None
        items = got if array and isinstance(got, list) else [got]
        if (array and not isinstance(got, list)) or not all(
            isinstance(v, kind) and (kind is bool or not isinstance(v, bool)) for v in items
        ):
            expected = f"a list of {kind.__name__}" if array else kind.__name__
            raise CheckpointError(f"{source}: {key} is not {expected}")
        return got

    model = value("tokenizer.ggml.model", str, required=True)
    if model != "gpt2":
        raise CheckpointError(
            f"{source}: tokenizer.ggml.model is {model!r}; numpylm reads byte-level BPE ('gpt2') "
            "only, not SentencePiece or others"
        )
    tokens = value("tokenizer.ggml.tokens", str, required=True, array=True)
    lines = value("tokenizer.ggml.merges", str, required=True, array=True)
    merges = [_split_merge(m, n, source) for n, m in enumerate(lines)]
    types = value("tokenizer.ggml.token_type", int, required=True, array=True)
    if len(types) != len(tokens):
        raise CheckpointError(
            f"{source}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
        )
    pre = value("tokenizer.ggml.pre", str) or "default"
    if value("tokenizer.ggml.add_bos_token", bool):
        raise CheckpointError(
            f"{source}: tokenizer.ggml.add_bos_token is true; numpylm does not put a start "
            "token before every text"
        )
    names = ("bos", "eos", "eot", "unknown", "padding")
    ids = {k: value(f"tokenizer.ggml.{k}_token_id", int) for k in names}
    for key, i in ids.items():
        if i is not None and not 0 <= i < len(tokens):
            raise CheckpointError(f"{source}: tokenizer.ggml.{key}_token_id {i} is not a token id")
    unknown_types = sorted({t for t in types if t not in (_NORMAL, _CONTROL, _USER_DEFINED)})
    if unknown_types:
        raise CheckpointError(
            f"{source}: tokenizer.ggml.token_type has the type {unknown_types[0]}; numpylm reads "
            "normal (1), control (3) and user-defined (4) tokens"
        )
    return Vocabulary(
        source=source,
        tokens=tokens,
        merges=merges,
        pre=pre,
        special={i for i, t in enumerate(types) if t == _CONTROL},
        added={i for i, t in enumerate(types) if t == _USER_DEFINED},
        normalization=NORMALIZATION.get(pre),
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        eot_id=ids["eot"],
        unk_id=ids["unknown"],
        pad_id=ids["padding"],
        chat_template=value("tokenizer.chat_template", str),
    )


def read_hf_vocabulary(directory: str | os.PathLike[str]) -> Vocabulary:
    """A Hugging Face directory's ``tokenizer.json`` (+ ``tokenizer_config.json``)."""
    root = Path(directory)
    path = root / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root} has no tokenizer.json")
    doc = read_json(path)
    model = doc.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else model
        raise CheckpointError(f"{path}: model.type is {kind!r}; numpylm reads byte-level 'BPE'")
    for key, expected in (
        ("dropout", None),
        ("continuing_subword_prefix", None),
        ("end_of_word_suffix", None),
        ("byte_fallback", False),
    ):
        if model.get(key, expected) != expected:
            raise CheckpointError(
                f"{path}: model.{key} is {model[key]!r}; numpylm's byte-level BPE needs "
                f"{expected!r}"
            )
    vocab = model.get("vocab")
    raw_merges = model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(raw_merges, list):
        raise CheckpointError(f"{path}: model.vocab must be an object and model.merges a list")
    size = 0
    for token, i in vocab.items():
        if type(i) is not int or i < 0:
            raise CheckpointError(f"{path}: model.vocab gives {token!r} the id {i!r}")
        size = max(size, i + 1)
    added_list = doc.get("added_tokens") or []
    for entry in added_list:
        if (
            not isinstance(entry, dict)
            or type(entry.get("id")) is not int
            or entry["id"] < 0
            or not isinstance(entry.get("content"), str)
        ):
            raise CheckpointError(
                f"{path}: added_tokens holds {entry!r}, not {{'id': ..., 'content': ...}}"
            )
        size = max(size, entry["id"] + 1)
    n_ids = len(set(vocab.values()) | {entry["id"] for entry in added_list})
    if size > n_ids:  # checked before a list of that size is made
        raise CheckpointError(
            f"{path}: the ids reach {size - 1} but there are {n_ids} tokens; ids run from 0 "
            "with no gaps"
        )
    tokens: list[str | None] = [None] * size
    for token, i in vocab.items():
        if tokens[i] is not None:
            raise CheckpointError(f"{path}: tokens {tokens[i]!r} and {token!r} share the id {i}")
        tokens[i] = token
    special: set[int] = set()
    added: set[int] = set()
    for entry in added_list:
        i, content = entry["id"], entry["content"]
        if tokens[i] not in (None, content):
            raise CheckpointError(
                f"{path}: added token {content!r} has the id {i} of {tokens[i]!r}"
            )
        for flag in ("lstrip", "rstrip", "single_word"):
            if entry.get(flag):
                raise CheckpointError(
                    f"{path}: the added token {content!r} has {flag} true, which numpylm does "
                    "not implement"
                )
        tokens[i] = content
        (special if entry.get("special") else added).add(i)
    merges = []
    for n, m in enumerate(raw_merges):
        if isinstance(m, str):
            merges.append(_split_merge(m, n, str(path)))
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            merges.append((m[0], m[1]))
        else:
            raise CheckpointError(f"{path}: merge {n + 1} is {m!r}, not two tokens")
    config_path = root / "tokenizer_config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    by_text = {t: i for i, t in enumerate(tokens)}
    named = {k: _token_text(config.get(f"{k}_token")) for k in ("bos", "eos", "unk", "pad")}
    ids: dict[str, int | None] = {}
    for k, text in named.items():
        if text is not None and text not in by_text:
            raise CheckpointError(f"{config_path}: {k}_token {text!r} is not a token")
        ids[k] = by_text.get(text) if text is not None else None
    _check_post_processor(doc.get("post_processor"), path)
    return Vocabulary(
        source=str(path),
        tokens=[t for t in tokens if t is not None],  # none is: the ids fill 0 .. size - 1
        merges=merges,
        pre=_pre_tokenizer_name(doc, path),
        special=special,
        added=added,
        normalization=_normalization(doc.get("normalizer"), path),
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        unk_id=ids["unk"],
        pad_id=ids["pad"],
        chat_template=_hf_chat_template(root, config, config_path),
    )


def build_tokenizer(vocab: Vocabulary) -> Tokenizer:
    """A ``Tokenizer`` from a vocabulary, whose ids are the model's ids.

    Raises:
        CheckpointError: the vocabulary is not a byte-level BPE whose pair ranks tiktoken can
            follow exactly (see the module's docstring), naming the file and the token.
    """
    source = vocab.source
    pattern = PRE_TOKENIZERS.get(vocab.pre)
    if pattern is None:
        raise CheckpointError(
            f"{source}: the pre-tokenizer {vocab.pre!r} is not one numpylm implements "
            f"({', '.join(sorted(PRE_TOKENIZERS))}); encoding with another would give the model "
            "ids it was not trained on"
        )
    table = _from_alphabet()
    ranks: dict[bytes, int] = {}
    specials: dict[str, int] = {}
    for i, token in enumerate(vocab.tokens):
        if i in vocab.special or i in vocab.added:
            if token in specials:
                raise CheckpointError(f"{source}: the special token {token!r} is listed twice")
            specials[token] = i
            continue
        try:
            raw = bytes(table[c] for c in token)
        except KeyError:
            raise CheckpointError(
                f"{source}: token {i} ({token!r}) has a character outside GPT-2's byte alphabet "
                "and is not a special token: the vocabulary is corrupt"
            ) from None
        if not raw or raw in ranks:
            raise CheckpointError(f"{source}: token {i} ({token!r}) is empty or listed twice")
        ranks[raw] = i
    _check_merges(vocab, ranks, table)
    if EOT not in specials:
        raise CheckpointError(
            f"{source} has no special token {EOT}, which numpylm's Tokenizer needs; only "
            "GPT-2-family vocabularies are supported"
        )
    path = Path(source)
    name = path.parent.name if path.name == "tokenizer.json" else path.name
    encoding = tiktoken.Encoding(
        name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials
    )
    texts = {i: t for t, i in specials.items()}
    template = None
    if vocab.chat_template is not None:
        names = {
            "bos_token": vocab.bos_id,
            "eos_token": vocab.eos_id,
            "unk_token": vocab.unk_id,
            "pad_token": vocab.pad_id,
        }
        try:
            template = ChatTemplate(
                vocab.chat_template,
                special_tokens={k: vocab.tokens[i] for k, i in names.items() if i is not None},
                control_tokens=[texts[i] for i in vocab.special],
                origin=source,
            )
        except ValueError as e:  # not valid Jinja: the file is at fault
            raise CheckpointError(str(e)) from None
    ends = [i for i in (vocab.eos_id, vocab.eot_id) if i is not None]
    ends += [specials[t] for t in ("<|im_end|>", EOT) if t in specials]
    return Tokenizer(
        encoding,
        chat_template=template,
        end_of_turn_ids=sorted(set(ends)),
        always_special=[texts[i] for i in vocab.added],
        normalization=vocab.normalization,
    )


def _check_merges(vocab: Vocabulary, ranks: Mapping[bytes, int], table: Mapping[str, int]) -> None:
    """Condition 1 of the module's docstring, and condition 2 by encoding every token alone."""
    source = vocab.source
    made: dict[bytes, tuple[bytes, bytes]] = {}
    previous = -1
    for n, (a, b) in enumerate(vocab.merges, start=1):
        try:
            left, right = bytes(table[c] for c in a), bytes(table[c] for c in b)
        except KeyError:
            raise CheckpointError(
                f"{source}: merge {n} ({a!r} {b!r}) has a character outside GPT-2's byte alphabet"
            ) from None
        joined = left + right
        i = ranks.get(joined)
        if i is None or left not in ranks or right not in ranks:
            raise CheckpointError(
                f"{source}: merge {n} ({a!r} {b!r}) joins or makes a token the vocabulary lacks"
            )
        if joined in made or i <= previous or ranks[left] >= i or ranks[right] >= i:
            raise CheckpointError(
                f"{source}: merge {n} ({a!r} {b!r}) makes token {i}, out of the merge order "
                "(tiktoken needs each merge to make a new token whose id is above those of the "
                "merges before it); numpylm cannot encode this vocabulary exactly"
            )
        made[joined] = (left, right)
        previous = i
    for token, i in ranks.items():
        if len(token) > 1 and token not in made:
            raise CheckpointError(
                f"{source}: token {i} ({vocab.tokens[i]!r}) is made by no merge; numpylm "
                "cannot encode this vocabulary exactly"
            )
    pair_rank = {pair: ranks[joined] for joined, pair in made.items()}
    unreached = _first_unreached(made, pair_rank)
    if unreached is not None:
        i = ranks[unreached]
        raise CheckpointError(
            f"{source}: token {i} ({vocab.tokens[i]!r}), encoded alone, does not come out as "
            "itself under its merges, but tiktoken would give it; numpylm cannot encode this "
            "vocabulary exactly"
        )


def _first_unreached(
    made: Mapping[bytes, tuple[bytes, bytes]], pair_rank: Mapping[tuple[bytes, bytes], int]
) -> bytes | None:
    """The first token (in merge order) that byte pair encoding with pair ranks, as Hugging
    Face and llama.cpp do it, does not reach when it encodes the token's bytes alone; None when
    every token is reached.

    Encoding the bytes of ``t = x + y`` joins, lowest pair rank first, pairs inside ``x``, pairs
    inside ``y``, and the pair across the cut (``x``'s last part, ``y``'s first). ``t`` is
    reached exactly when the first two runs finish before the pair across the cut is joined: the
    joins are then ``x``'s own, ``y``'s own, and last ``x y``. So each token's run is its two
    parts' runs merged by rank (the left one first on a tie), and a run is kept as the list of
    its joins ``(rank, first part, last part after it)``; a token of one byte has none.
    """
    never = len(pair_rank) + 1 << 32
    runs: dict[bytes, list[tuple[int, bytes, bytes]]] = {}
    for token, (x, y) in made.items():  # in merge order: a token's parts come before it
        run_x, run_y = runs.get(x, []), runs.get(y, [])
        first_x, last_x, first_y, last_y = x[:1], x[-1:], y[:1], y[-1:]
        i = j = 0
        run = []
        while i < len(run_x) or j < len(run_y):
            next_x = run_x[i][0] if i < len(run_x) else never
            next_y = run_y[j][0] if j < len(run_y) else never
            across = pair_rank.get((last_x, first_y), never)
            if across < next_x and across <= next_y:
                return token  # joined across the cut before x and y are whole
            if next_x <= next_y:
                _, first_x, last_x = run_x[i]
                i += 1
                run.append((next_x, first_x, last_y))
            else:
                _, first_y, last_y = run_y[j]
                j += 1
                run.append((next_y, first_x, last_y))
        run.append((pair_rank[x, y], token, token))
        runs[token] = run
    return None


def _from_alphabet() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _split_merge(line: str, n: int, source: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 2 or not all(parts):
        raise CheckpointError(
            f"{source}: merge {n + 1} is {line!r}; a merge is two tokens separated by one space"
        )
    return parts[0], parts[1]


def _token_text(value: Any) -> str | None:
    """A token named in tokenizer_config.json: a string, or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _normalization(normalizer: Any, path: Path) -> str | None:
    if normalizer is None:
        return None
    if isinstance(normalizer, dict) and normalizer.get("type") == "NFC":
        return "NFC"
    kind = normalizer.get("type") if isinstance(normalizer, dict) else normalizer
    raise CheckpointError(f"{path}: the normalizer {kind!r} is not one numpylm implements (NFC)")


def _check_post_processor(processor: Any, path: Path) -> None:
    """Refuse a post-processor that adds tokens to every text (Llama 3's start token): numpylm's
    ``encode`` gives the text's tokens only. GPT-2's, SmolLM2's and Qwen2's ``ByteLevel`` changes
    only the offsets of tokens in the text."""
    kind = processor.get("type") if isinstance(processor, dict) else processor
    if processor is not None and kind != "ByteLevel":
        raise CheckpointError(
            f"{path}: the post_processor {kind!r} adds tokens to every text, which numpylm does "
            "not do; its encode() gives the text's own tokens"
        )


def _pre_tokenizer_name(doc: Mapping[str, Any], path: Path) -> str:
    """The name (``PRE_TOKENIZERS``) of the pre-tokenizer a tokenizer.json describes."""
    pre = doc.get("pre_tokenizer")
    steps = (
        pre.get("pretokenizers")
        if isinstance(pre, dict) and pre.get("type") == "Sequence"
        else [pre]
    )
    if not isinstance(steps, list):
        steps = [steps]

    def byte_level(step: Any, use_regex: bool) -> bool:
        return (
            isinstance(step, dict)
            and step.get("type") == "ByteLevel"
            and not step.get("add_prefix_space", False)
            and step.get("use_regex", True) is use_regex
        )

    if len(steps) == 1 and byte_level(steps[0], True):
        return "gpt-2"
    if (
        len(steps) == 2
        and byte_level(steps[1], True)
        and steps[0]
        == {
            "type": "Digits",
            "individual_digits": True,
        }
    ):
        return "smollm"
    if (
        len(steps) == 2
        and byte_level(steps[1], False)
        and isinstance(steps[0], dict)
        and steps[0].get("type") == "Split"
        and steps[0].get("pattern") == {"Regex": QWEN2_PATTERN}
        and steps[0].get("behavior") == "Isolated"
        and not steps[0].get("invert", False)
    ):
        return "qwen2"
    shown = json.dumps(pre)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    raise CheckpointError(
        f"{path}: the pre_tokenizer {shown} is not one numpylm implements (GPT-2's ByteLevel, "
        "SmolLM2's Digits + ByteLevel, Qwen2's Split + ByteLevel)"
    )


def _hf_chat_template(root: Path, config: Mapping[str, Any], config_path: Path) -> str | None:
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{jinja} is not UTF-8 text") from None
    template = config.get("chat_template")
    if isinstance(template, list):  # several named templates: the default one
        template = next(
            (
                t.get("template")
                for t in template
                if isinstance(t, dict) and t.get("name") == "default"
            ),
            None,
        )
    if template is not None and not isinstance(template, str):
        raise CheckpointError(f"{config_path}: chat_template is not a string")
    return template
