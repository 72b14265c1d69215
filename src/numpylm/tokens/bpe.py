"""Training a byte-level BPE tokenizer: where GPT-2's merges come from.

``tokenizer.py`` *uses* a list of merges; this module *learns* one from text. The recipe:

1. Cut the text into chunks with GPT-2's pattern (``GPT2_PATTERN``: words with their leading
   space, runs of digits, punctuation, whitespace). Merges never cross a chunk boundary, so
   " the" can become one token but "e t" never does.
2. Write every chunk as its UTF-8 bytes: the starting vocabulary is the 256 byte values, so any
   text at all can be encoded, emoji included.
3. Count every adjacent pair of tokens, merge the most frequent pair into a new token
   everywhere it occurs, and repeat until the vocabulary is as large as asked.

``train_bpe_merges_naive`` is the recipe as it reads, in a few lines: it recounts every pair
of the whole text before each merge, which is simple and slow (minutes for a 2048-token
vocabulary of Tiny Shakespeare). Read it first. ``train_bpe_merges`` learns the same merges
(a test keeps them equal), fast:

Three ideas make this fast enough to train a 2048-token vocabulary on 1 MB of text in seconds:

- Tiny Shakespeare's million characters make about 300,000 chunks but only 15,000 *different*
  ones (" the" occurs thousands of times). Each unique chunk is stored once with its count, and
  a pair inside it counts as many times as the chunk occurs.
- A merge only changes the chunks that contain the merged pair, so the pair counts are updated
  for those chunks alone instead of being recounted over the whole text.
- The most frequent pair is taken from a heap instead of a scan of all pair counts. A heap
  cannot change an entry in place, so a pair whose count changes is pushed again with its new
  count, and an entry whose count is out of date is thrown away when it comes to the top.

Ties: when several pairs are equally frequent, the one with the smaller first token id wins,
then the smaller second id (among single bytes that is byte order; among learned tokens, the
one learned earlier). Training is therefore deterministic: the same text always gives the
same merges.

The result is a ``numpylm.Tokenizer`` like GPT-2's: ids 0..255 are the single bytes in byte
order, merge ``i`` creates id ``256 + i``, and ``<|endoftext|>`` is the last id.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from itertools import pairwise

import regex

from .tokenizer import GPT2_PATTERN, Tokenizer

Pair = tuple[int, int]
"""Two adjacent token ids."""

_CHUNK = regex.compile(GPT2_PATTERN)


def train_bpe(text: str, vocab_size: int, *, verbose: bool = False) -> Tokenizer:
    """Learn a byte-level BPE tokenizer of ``vocab_size`` tokens from ``text``.

    The vocabulary is the 256 single bytes, ``vocab_size - 257`` learned merges and
    ``<|endoftext|>``, so ``train_bpe(text, 1024).n_vocab == 1024``. ``verbose`` prints each
    merge as it is learned. ``<|endoftext|>`` inside ``text`` is learned from as plain text.
    Raises ValueError when ``vocab_size`` is below 257 or when ``text`` is too small to learn
    that many merges (the message says how large ``vocab_size`` can be for it).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < 257:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE vocabulary holds the 256 "
            "byte values and <|endoftext|>, so vocab_size must be at least 257"
        )
    merges = train_bpe_merges(text, vocab_size - 257, verbose=verbose)
    return Tokenizer.from_ranks(ranks_from_merges(merges))


def train_bpe_merges_naive(text: str, n_merges: int) -> list[tuple[bytes, bytes]]:
    """The first ``n_merges`` merges BPE learns from ``text``, the plain way: the same merges
    as ``train_bpe_merges`` (the same ties too), recounting everything at every step."""
    chunks = [list(chunk.encode("utf-8")) for chunk in _CHUNK.findall(text)]  # 1. and 2.
    tokens = [bytes([b]) for b in range(256)]  # token id -> its bytes
    merges: list[tuple[bytes, bytes]] = []
    for step in range(n_merges):
        # 3. Count every adjacent pair in the whole text ...
        counts = Counter(pair for chunk in chunks for pair in pairwise(chunk))
        if not counts:
            raise ValueError(f"the text is too small for {n_merges} merges (after {step})")
        # ... take the most frequent (ties: the smaller first id, then the smaller second) ...
        a, b = min(counts, key=lambda pair: (-counts[pair], pair))
        # ... and merge it everywhere into a new token.
        chunks = [merge_pair(chunk, (a, b), len(tokens)) for chunk in chunks]
        merges.append((tokens[a], tokens[b]))
        tokens.append(tokens[a] + tokens[b])
    return merges


def train_bpe_merges(
    text: str, n_merges: int, *, verbose: bool = False
) -> list[tuple[bytes, bytes]]:
    """The first ``n_merges`` merges BPE learns from ``text``, in the order learned.

    Each merge is a pair of tokens as bytes, e.g. ``(b" t", b"he")`` makes the token ``b" the"``.
    Raises ValueError when the text runs out of adjacent pairs before ``n_merges`` merges (every
    chunk has become a single token); the message says how many merges were possible.
    """
    if isinstance(n_merges, bool) or not isinstance(n_merges, int) or n_merges < 0:
        raise ValueError(f"n_merges must be an int >= 0, got {n_merges!r}")

    # 1. Unique chunks with their counts; each chunk becomes a list of byte values (token ids).
    chunk_counts = Counter(_CHUNK.findall(text))
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())

    # 2. How often each adjacent pair occurs in the whole text, and which words it occurs in.
    pair_counts: defaultdict[Pair, int] = defaultdict(int)
    where: defaultdict[Pair, set[int]] = defaultdict(set)
    for w, (word, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(word):
            pair_counts[pair] += freq
            where[pair].add(w)
    # A max-heap of (-count, first id, second id): the top is the most frequent pair, ties
    # broken by the smaller ids, exactly the order the module docstring promises.
    heap = [(-count, a, b) for (a, b), count in pair_counts.items()]
    heapq.heapify(heap)

    tokens = [bytes([b]) for b in range(256)]  # token id -> its bytes
    merges: list[tuple[bytes, bytes]] = []
    for step in range(n_merges):
        best = _pop_most_frequent(heap, pair_counts)
        if best is None:
            raise ValueError(
                f"the text is too small for {n_merges} merges: after {step} merges every chunk "
                f"is a single token, so vocab_size can be at most {256 + step + 1} for this text"
            )
        new_id = len(tokens)
        if verbose:
            print(
                f"merge {step + 1}/{n_merges}: {tokens[best[0]]!r} + {tokens[best[1]]!r} -> "
                f"{tokens[best[0]] + tokens[best[1]]!r} (id {new_id}, {pair_counts[best]} times)"
            )
        merges.append((tokens[best[0]], tokens[best[1]]))
        tokens.append(tokens[best[0]] + tokens[best[1]])

        # 3. Only the words containing the pair change: take their old pairs out of the counts
        # and put their new pairs in. ``where`` may list a word whose pair an earlier merge
        # already used up; merging then changes nothing and the word is skipped.
        changed: set[Pair] = set()
        for w in where.pop(best):
            old = words[w]
            new = merge_pair(old, best, new_id)
            if len(new) == len(old):
                continue
            freq = freqs[w]
            for pair in pairwise(old):
                pair_counts[pair] -= freq
            for pair in pairwise(new):
                pair_counts[pair] += freq
                where[pair].add(w)
            changed.update(pairwise(old), pairwise(new))
            words[w] = new
        # The merged pair is used up (left-to-right merging leaves no copy of it) and drops
        # out here; every other changed pair goes back on the heap with its new count.
        for pair in changed:
            if pair_counts[pair] == 0:
                del pair_counts[pair]
            else:
                heapq.heappush(heap, (-pair_counts[pair], *pair))
    return merges


def _pop_most_frequent(
    heap: list[tuple[int, int, int]], pair_counts: dict[Pair, int]
) -> Pair | None:
    """Pop the most frequent pair off ``heap``, skipping entries whose count is out of date
    (the pair's count changed after they were pushed, and a newer entry holds the new count).
    None when no pair is left."""
    while heap:
        neg_count, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b)) == -neg_count:
            return (a, b)
    return None


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """``ids`` with every occurrence of ``pair`` replaced by ``new_id``, left to right (so
    ``[a, a, a]`` merging ``(a, a)`` gives ``[aa, a]``)."""
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def ranks_from_merges(merges: list[tuple[bytes, bytes]]) -> dict[bytes, int]:
    """Merges -> tiktoken's ranks (token bytes -> id): the 256 bytes as ids 0..255, then merge
    ``i`` as id ``256 + i``."""
    ranks = {bytes([b]): b for b in range(256)}
    for a, b in merges:
        if a not in ranks or b not in ranks:
            raise ValueError(f"merge {a!r} + {b!r} uses a token no earlier merge made")
        if a + b in ranks:
            raise ValueError(f"merge {a!r} + {b!r} makes {a + b!r} a second time")
        ranks[a + b] = len(ranks)
    return ranks


def encode_with_merges(text: str, merges: list[tuple[bytes, bytes]]) -> list[int]:
    """Text -> token ids by applying ``merges`` in plain Python: the slow, readable twin of
    what tiktoken does with the same ranks.

    Each chunk of the text starts as its single bytes; then the adjacent pair whose merge was
    learned first is merged, again and again, until no adjacent pair has a merge.
    """
    ranks = ranks_from_merges(merges)
    merge_rank = {(ranks[a], ranks[b]): i for i, (a, b) in enumerate(merges)}
    ids: list[int] = []
    for chunk in _CHUNK.findall(text):
        parts = list(chunk.encode("utf-8"))
        while len(parts) > 1:
            pair = min(pairwise(parts), key=lambda p: merge_rank.get(p, len(merges)))
            if pair not in merge_rank:
                break  # no adjacent pair was ever merged: the chunk is done
            parts = merge_pair(parts, pair, 256 + merge_rank[pair])
        ids.extend(parts)
    return ids
