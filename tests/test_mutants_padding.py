"""Left padding, position ids and the KV cache's bookkeeping, checked exactly against a
plain reference (``models/padding.py``, ``models/cache.py``).

Written for the survivors of a mutation run (docs/reliability.md, "Mutation testing"): each
test pins the shapes, dtypes and values a one-line bug there would change.
"""

from __future__ import annotations

import numpy as np
import pytest

from numpylm.models.cache import KVCache
from numpylm.models.padding import Padding, left_pad, positions_and_mask


def reference(
    T: int, start: int, new: np.ndarray, old: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row by row, key by key: positions count a row's real tokens; a query sees the keys up to
    its own position that are real."""
    B, L = len(new), start + T
    keys = np.concatenate([old, new], axis=1)
    pos = np.zeros((B, T), dtype=np.int64)
    allowed = np.zeros((B, 1, T, L), dtype=bool)
    for b in range(B):
        for t in range(T):
            real_before = int(old[b].sum() + new[b, : t + 1].sum())
            pos[b, t] = max(real_before - 1, 0)
            for j in range(L):
                allowed[b, 0, t, j] = j <= start + t and keys[b, j]
    return pos, allowed, keys, keys.sum(axis=1)


def check(
    got: tuple[np.ndarray, np.ndarray | None, Padding | None],
    want: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    T: int,
) -> None:
    pos, allowed, padding = got
    assert pos.dtype == np.int64 and padding is not None
    np.testing.assert_array_equal(pos, want[0])
    assert allowed is not None and allowed.dtype == bool
    B, _, _, L = want[1].shape
    assert allowed.shape == ((B, 1, T, L) if T > 1 else (B, 1, 1, L))
    np.testing.assert_array_equal(np.broadcast_to(allowed, want[1].shape), want[1])
    assert padding.key_mask.dtype == bool and padding.n_real.dtype == np.int64
    np.testing.assert_array_equal(padding.key_mask, want[2])
    np.testing.assert_array_equal(padding.n_real, want[3])


def test_one_sequence_needs_no_padding() -> None:
    pos, allowed, padding = positions_and_mask(3, 2, None, None)
    np.testing.assert_array_equal(pos, [2, 3, 4])
    assert allowed is not None and allowed.dtype == bool
    np.testing.assert_array_equal(allowed, np.tri(3, 5, k=2, dtype=bool))
    assert padding is None
    pos, allowed, padding = positions_and_mask(1, 4, None, None)  # one new token sees all
    np.testing.assert_array_equal(pos, [4])
    assert allowed is None and padding is None


MASKS = [
    np.array([[False, False, True, True], [True, True, True, True]]),
    np.array([[False, True, True, True], [False, False, False, True], [True, True, True, True]]),
    np.array([[False, True], [True, True]]),
]


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("start", [0, 2])
def test_a_padded_prefill(mask: np.ndarray, start: int) -> None:
    """The prompt's padding, after ``start`` tokens already cached without padding."""
    T = mask.shape[1]
    old = np.ones((len(mask), start), dtype=bool)
    check(positions_and_mask(T, start, mask, None), reference(T, start, mask, old), T)


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("with_mask", [False, True])
def test_steps_after_a_padded_prefill(T: int, with_mask: bool) -> None:
    """Decoding steps continue each row's positions and keep hiding its padding."""
    prefill = MASKS[1]
    _, _, padding = positions_and_mask(prefill.shape[1], 0, prefill, None)
    assert padding is not None
    new = np.ones((3, T), dtype=bool)
    if with_mask:
        new[1, 0] = False
    start = prefill.shape[1]
    got = positions_and_mask(T, start, new if with_mask else None, padding)
    check(got, reference(T, start, new, prefill), T)
    np.testing.assert_array_equal(got[0][:, 0], [3, 1, 4] if not with_mask else [3, 0, 4])


def test_left_pad() -> None:
    ids, mask = left_pad([[1, 2, 3], [4], [5, 6]], pad_id=7)
    assert ids.dtype == np.int64 and mask is not None and mask.dtype == bool
    np.testing.assert_array_equal(ids, [[1, 2, 3], [7, 7, 4], [7, 5, 6]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1], [0, 1, 1]])
    ids, mask = left_pad([[1, 2], [3]])  # pads with 0 by default
    np.testing.assert_array_equal(ids, [[1, 2], [0, 3]])
    ids, mask = left_pad([[1, 2], [3, 4]])
    np.testing.assert_array_equal(ids, [[1, 2], [3, 4]])
    assert mask is None  # no row needed padding


def test_a_reset_cache_forgets_its_tokens_and_keeps_its_arrays() -> None:
    k, v = np.zeros((1, 2, 1, 4, 2)), np.zeros((1, 2, 1, 4, 2))
    padding = Padding(np.ones((2, 3), dtype=bool), np.array([3, 3]))
    cache = KVCache(k, v, 3, padding)
    assert KVCache(k, v).length == 0 and KVCache(k, v).padding is None
    cache.reset()
    assert cache.length == 0 and cache.padding is None and cache.k is k and cache.v is v
