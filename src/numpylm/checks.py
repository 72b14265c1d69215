"""Argument checks, one checker per kind of value, so every refusal reads the same way: the
parameter's name, what it must be, and the value that was given.

The public functions of numpylm check what they are given and say clearly what was wrong,
instead of failing deep inside NumPy. The objects that are made once and used many times (a
``Sampler``, a ``TrainConfig``) check their values when they are made, and trust them after.

This module is at the bottom of the package: it imports nothing of numpylm.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import Any

import numpy as np

TokenIds = np.ndarray | list[int] | list[list[int]]
"""What a model reads: a (T,) or (B, T) array of token ids, or the same as (nested) lists."""


def as_int(name: str, value: object) -> int:
    """``value`` as a Python int, or a TypeError naming ``name`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    return int(value)


def as_float(name: str, value: object) -> float:
    """``value`` as a Python float, or a TypeError naming ``name`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def in_range(name: str, value: float, allowed: str, ok: bool) -> float:
    """Return ``value`` if ``ok``; otherwise a ValueError saying ``name`` must be ``allowed``.
    NaN and infinities are always refused."""
    if not ok or not math.isfinite(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # 2**-126, about 1.18e-38
FLOAT32_MAX = float(np.finfo(np.float32).max)  # about 3.40e38


def float32_factor(name: str, value: object, meaning: str, zero: str | None = None) -> float:
    """A number the float32 logits are divided or multiplied by (a temperature, a penalty):
    from ``FLOAT32_TINY`` to ``FLOAT32_MAX``, float32's range of normal numbers, or 0 where
    ``zero`` says what 0 means. NumPy converts the number to float32 before it divides: 1e-320
    becomes 0 (a division by zero), 1e-40 a subnormal that has lost its precision, and 1e39
    infinity (and 0 times infinity is NaN)."""
    x = as_float(name, value)
    ok = x == 0 if zero is not None and x == 0 else FLOAT32_TINY <= x <= FLOAT32_MAX
    allowed = f"a number from {FLOAT32_TINY:.3g} to {FLOAT32_MAX:.3g} (float32's range; {meaning})"
    return in_range(name, x, f"0 ({zero}) or {allowed}" if zero else allowed, ok)


def whole_number(name: str, value: object, low: int = 0) -> int:
    """An integer argument ``>= low``: a TypeError for another type, a ValueError below."""
    n = as_int(name, value)
    in_range(name, n, f"a whole number >= {low}", n >= low)
    return n


def finite_number(name: str, value: object, low: float = 0.0) -> float:
    """A real argument that is finite and ``>= low``: a TypeError for another type, a
    ValueError for NaN, an infinity or a number below ``low``."""
    x = as_float(name, value)
    return in_range(name, x, f"a finite number >= {low:g}", x >= low)


def path(name: str, value: object) -> str:
    """A path argument: a non-empty ``str`` or ``os.PathLike``. An empty path, which is what an
    unset shell variable gives (``--out "$DIR"``), would mean the current directory to the
    operating system, so it is refused, never taken for one."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a path, got {type(value).__name__} {value!r}")
    text = os.fspath(value)
    if not text:
        raise ValueError(f"{name} is empty (an unset shell variable?): give a file or directory")
    return str(text)


def positive_int(name: str, value: object) -> int:
    """A count read from a file or the environment (a config's layers, a number of threads):
    any value that is not an integer >= 1 is a ValueError (a float such as 1.5 is never
    rounded)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def model_shape(owner: str, fields: dict[str, Any]) -> None:
    """A model's shape (``vocab_size``, ``n_ctx``, ``n_layer``, ``n_head``, ``n_embd``):
    positive integers, and ``n_head`` divides ``n_embd``; messages name ``owner``."""
    for name, value in fields.items():
        positive_int(f"{owner}.{name}", value)
    if fields["n_embd"] % fields["n_head"]:
        raise ValueError(
            f"{owner}.n_embd ({fields['n_embd']}) must be divisible by n_head ({fields['n_head']})"
        )


def dropout_rate(value: object, name: str = "rate") -> float:
    """``value`` as a Python float, if it is a dropout rate: a number in ``[0, 1)``.

    Raises:
        ValueError: anything else, naming ``name`` (1 would drop everything; NaN, negative
            numbers, strings and booleans are refused too).
    """
    if not isinstance(value, bool) and isinstance(value, Real) and 0.0 <= float(value) < 1.0:
        return float(value)
    raise ValueError(
        f"{name} must be a dropout rate in [0, 1), the probability of zeroing each value "
        f"(0 turns dropout off; 0.1 is usual), got {value!r}"
    )


def index(name: str, value: object, size: int, what: str) -> int:
    """An index into ``size`` things (``what``, e.g. "layers"): a TypeError for a non-integer,
    a ValueError outside ``0 .. size - 1``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= int(value) < size:
        raise ValueError(
            f"{name} must be in 0 to {size - 1} (the model has {size} {what}), got {value}"
        )
    return int(value)


def token_ids(ids: object, vocab_size: int) -> np.ndarray:
    """Token ids for a model: a (T,) or (B, T) array of integers in ``[0, vocab_size)``.

    Returns:
        The ids as a (B, T) integer array (a (T,) sequence becomes (1, T)).
    """
    try:
        arr = np.asarray(ids)
    except ValueError:  # NumPy's words for a ragged list are about its internals
        raise ValueError(
            "token ids must form a (B, T) array, but the rows have different lengths; pad "
            "them on the left and pass attention_mask (1 for tokens, 0 for padding)"
        ) from None
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"token ids must be an integer array, got dtype {arr.dtype}; tokenize text with "
            "Tokenizer.encode, or convert with np.asarray(ids, dtype=np.int64)"
        )
    if arr.ndim not in (1, 2):
        raise ValueError(f"token ids must have shape (T,) or (B, T), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"token ids are empty (shape {arr.shape}); give at least one token")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(
            f"token id {lo if lo < 0 else hi} is out of range: this model's vocabulary has "
            f"ids 0 to {vocab_size - 1} (was the text encoded with another tokenizer?)"
        )
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def attention_mask(mask: object, B: int, T: int) -> np.ndarray:
    """A (B, T) mask, 1 (True) for real tokens and 0 for padding, as a bool array."""
    m = np.asarray(mask)
    if m.shape != (B, T):
        raise ValueError(f"attention_mask must have the shape of ids, ({B}, {T}), got {m.shape}")
    return m.astype(bool)


def training_batch(
    ids: Any, targets: Any, mask: Any, vocab_size: int, n_ctx: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A training batch: (B, T) ids with T <= n_ctx, targets shaped like them (token ids, or
    -1 for a position that does not count), and an optional mask shaped like them.

    Returns:
        ``(ids, targets, mask)`` as (B, T) arrays (int, int, bool or None).
    """
    ids2d = token_ids(ids, vocab_size)
    B, T = ids2d.shape
    if T > n_ctx:
        raise ValueError(
            f"sequences of {T} tokens exceed the model's context of n_ctx={n_ctx}; train on "
            f"chunks of at most {n_ctx} tokens"
        )
    t = np.asarray(targets)
    if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"targets must be an integer array, got dtype {t.dtype}")
    if t.shape != np.shape(ids):
        raise ValueError(f"targets must have the shape of ids, {np.shape(ids)}, got {t.shape}")
    t = t.reshape(B, T)
    lo, hi = int(t.min()), int(t.max())
    if lo < -1 or hi >= vocab_size:
        raise ValueError(
            f"target {lo if lo < -1 else hi} is out of range: targets are token ids 0 to "
            f"{vocab_size - 1}, or -1 for a position that does not count"
        )
    if mask is None:
        return ids2d, t, None
    m = np.asarray(mask)
    if m.shape != np.shape(ids):
        raise ValueError(f"mask must have the shape of ids, {np.shape(ids)}, got {m.shape}")
    return ids2d, t, m.astype(bool).reshape(B, T)


def token_window(ids: object, vocab_size: int, n_ctx: int) -> np.ndarray:
    """``token_ids`` that fit the context: T <= n_ctx. Returns (B, T)."""
    ids2d = token_ids(ids, vocab_size)
    if ids2d.shape[1] > n_ctx:
        raise ValueError(
            f"sequence too long: {ids2d.shape[1]} tokens exceed the model's context of "
            f"n_ctx={n_ctx}; pass at most the last {n_ctx} tokens"
        )
    return ids2d


def cache_room(cache: Any, T: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """Check that T new tokens fit: in the context, and in ``cache`` (a ``KVCache`` or None),
    which must have been made by this model for this batch: its keys shaped as ``shape``
    (n_layer, B, H, n_ctx, D), but for the positions it holds, and of ``dtype``. Then grow the
    cache to hold the new tokens (``KVCache.make_room``). Returns how many tokens the cache
    holds already (0 without one)."""
    n_ctx, start = shape[3], 0 if cache is None else int(cache.length)
    if start + T > n_ctx:
        where = f"the cache holds {start} and {T} more were given; " if cache is not None else ""
        raise ValueError(
            f"sequence too long: {where}{start + T} tokens exceed the model's context of "
            f"n_ctx={n_ctx}. Keep only the last {n_ctx} tokens (generate() does this for you)"
        )
    if cache is None:
        return start
    if cache.k.shape[1] != shape[1]:
        raise ValueError(
            f"the cache was made for batch size {cache.k.shape[1]}, ids have {shape[1]}"
        )
    got = cache.k.shape[:3] + cache.k.shape[4:]
    if got != shape[:3] + shape[4:] or cache.k.dtype != dtype or cache.k.shape[3] > n_ctx:
        raise ValueError(
            f"the cache does not belong to this model: its keys are {cache.k.dtype} "
            f"{cache.k.shape}, this model's are {dtype} {shape} (n_layer, B, H, n_ctx, D; the "
            "cache may hold fewer positions); make it with this model's new_cache()"
        )
    cache.make_room(start + T, n_ctx)
    return start
