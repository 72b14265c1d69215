"""Argument checks shared by the samplers, so every bad value gets the same kind of message:
the parameter's name, the allowed range, and the value that was given."""

from __future__ import annotations

import math
from numbers import Integral, Real


def as_float(name: str, value: object) -> float:
    """``value`` as a Python float, or a TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def as_int(name: str, value: object) -> int:
    """``value`` as a Python int, or a TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    return int(value)


def in_range(name: str, value: float, allowed: str, ok: bool) -> float:
    """Return ``value`` if ``ok``; otherwise a ValueError saying ``name`` must be in ``allowed``.
    NaN and infinities are always refused."""
    if not ok or not math.isfinite(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value
