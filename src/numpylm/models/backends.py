"""Backends: the functions the forward pass is written against, in two versions for inference
and one for training.

``GPT.forward`` (``model.py``) is written once, against four functions:

- ``linear(x, w, b=None)``: (..., C_in) -> (..., C_out), ``x @ w + b``;
- ``layer_norm(x, w, b)``: (..., C) -> (..., C);
- ``gelu(x)``: elementwise;
- ``attention(q, k, v, allowed)``: (B, H, T, D) queries, (B, H, L, D) keys and values, and a
  mask broadcastable to (B, H, T, L) or None -> (B, H, T, D) attended values. Attention is
  causal: for T > 1, ``allowed`` includes the causal mask.

A ``Backend`` is a set of the four, ``session(rows)``, a context the forward pass runs in (for
``THREADS``: BLAS held to one thread while numpylm's own threads split the work; for
``PLAIN``: nothing), and ``dropout(x)``, which returns ``x`` for inference: only training's
backend (``models.gpt2.backward.recording``) drops anything, and records what its backward
pass needs. ``PLAIN`` is ``numpylm.layers`` as written, the formulas and nothing else: the
one to read, and the one that runs by default. ``THREADS`` is ``numpylm.models.parallel``: the
same numbers (to rounding), with a long prompt's work spread over the cores. ``AUTO``, the
default (``DEFAULT``), is not a third way to compute: for each forward pass it is ``PLAIN``,
unless the pass reads enough tokens to be worth splitting over the cores (``parallel.splits``:
a long prompt, a large batch of prompts), and then ``THREADS``. A decoding step, even for 100
samples at once, runs the plain layers. Choose one for good when the model is built
(``GPT(config, backend="plain")``) or for one call (``model(ids, backend="threads")``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import numpy as np

from .. import checks, layers
from . import parallel

Array = np.ndarray


@dataclass(frozen=True)
class Backend:
    """The four functions of the forward pass, its session and its dropout (see the module
    docstring)."""

    name: str
    linear: Callable[..., Array]
    layer_norm: Callable[[Array, Array, Array], Array]
    gelu: Callable[[Array], Array]
    attention: Callable[[Array, Array, Array, Array | None], Array]
    session: Callable[[int], AbstractContextManager[None]] = lambda rows: nullcontext()
    dropout: Callable[[Array], Array] = lambda x: x

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def _attend(q: Array, k: Array, v: Array, allowed: Array | None) -> Array:
    """``layers.attention``'s attended values only (inference keeps no probabilities)."""
    return layers.attention(q, k, v, allowed)[0]


PLAIN = Backend("plain", layers.linear, layers.layer_norm, layers.gelu, _attend)
THREADS = Backend(
    "threads",
    parallel.linear,
    layers.layer_norm_fast,
    parallel.gelu,
    parallel.attention,
    parallel.single_threaded_blas,
)
AUTO = replace(PLAIN, name="auto")  # the plain functions, until a pass is large (get_backend)
BACKENDS = {b.name: b for b in (AUTO, PLAIN, THREADS)}
DEFAULT = AUTO


def get_backend(backend: str | Backend | None = None, rows: int | None = None) -> Backend:
    """A backend by name (``"auto"``, ``"plain"``, ``"threads"``) or as it is; None is
    ``DEFAULT``. Given the ``rows`` (tokens, B * T) of the pass about to run, ``AUTO`` becomes
    the backend that computes it: ``THREADS`` if the pass is worth splitting over the cores,
    else ``PLAIN``."""
    if backend is None:
        backend = DEFAULT
    if not isinstance(backend, Backend):
        if backend not in BACKENDS:
            raise ValueError(
                f"backend must be one of {sorted(BACKENDS)} or a Backend, got {backend!r}"
            )
        backend = BACKENDS[backend]
    if backend is AUTO and rows is not None:
        return THREADS if parallel.splits(checks.whole_number("rows", rows, 1)) else PLAIN
    return backend


def long_rows(w: Array) -> Array:
    """The (N, M) matrix ``w`` with its longer axis contiguous in memory (its first, if they are
    as long): the same numbers, another layout (a copy if it changes).

    A decoding step multiplies one row by every weight matrix, and reading the weights is most
    of its time. OpenBLAS streams a matrix faster along long contiguous rows than short ones: on
    the AMD EPYC of ``docs/benchmarks.md``, ``x @ w.T`` read a (3072, 576) ``w`` at 32 GB/s
    column-major against 28 row-major, SmolLM2's (49152, 576) head at 34 against 28, and a
    square (576, 576) one at 18 against 15 (too small for a second thread to help).
    """
    return np.asfortranarray(w) if w.shape[0] >= w.shape[1] else np.ascontiguousarray(w)


def decoding_layout(params: dict[str, Array], looked_up: tuple[str, ...] = ()) -> dict[str, Array]:
    """``params``, in place, with every matrix laid out by ``long_rows``, except those named in
    ``looked_up``: tables the forward only indexes (a position embedding), which keep their
    rows. The same numbers. Returns ``params``."""
    for name, w in params.items():
        if w.ndim == 2 and name not in looked_up:
            params[name] = long_rows(w)  # the array it replaces is freed now, not at the end
    return params


def in_layout_of(w: Array, a: Array) -> Array:
    """``a``, an array of ``w``'s shape (its gradient), in ``w``'s memory layout: the optimiser
    updates each weight in place from its gradient, and NumPy runs those updates in memory order
    only when the two are laid out alike (a row-major gradient made AdamW 16x slower on a
    column-major weight)."""
    return np.asfortranarray(a) if w.flags.f_contiguous and not w.flags.c_contiguous else a
