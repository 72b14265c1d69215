"""The threads backend: the inference forward pass spread over the machine's cores.

NumPy runs its elementwise work (``exp``, ``tanh``, ...) on one core, and OpenBLAS's own
threads wait for each other badly when other programs share the cores. So for inference
numpylm splits each large operation itself: a pool of worker threads, one per core, each
running single-threaded BLAS on its own part of the work. NumPy releases Python's lock inside
its loops, so the threads really run at the same time.

This pays when the forward pass reads many tokens at once (a prompt, an evaluation batch):
each thread takes a block of rows of every matrix product and of the GELU, and a block of
queries of the attention (where causality helps: a block of queries only sees the keys up to
its last row, so the masked-out corner is never computed). No two threads write the same
numbers. A decoding step has one row per sequence: too little work to hand out (waking the
threads costs more than it saves, measured), so it is left to BLAS's own threads; so is a
short prompt (fewer than ``_MIN_ROWS_PER_THREAD`` tokens per thread).

Each function here computes what its namesake in ``layers`` computes (``linear``, ``gelu``,
``attention``), to rounding, and ``backends.THREADS`` gathers them: the model's forward pass is
written once, against whichever backend it is given. While a split operation runs, BLAS is held
to one thread (each of numpylm's threads calls it on its own part).

Training does not use these: it splits whole batches over threads instead
(``numpylm.training.train``), and it needs the full attention probabilities for the backward pass.

``set_threads(n)`` chooses the number of threads (default: the cores this process may use, or
the ``NUMPYLM_THREADS`` environment variable); ``set_threads(1)`` turns all of this off and
leaves the work to NumPy and its BLAS as they are.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from .. import layers
from ..checks import positive_int

# Fewer rows (tokens) than this per thread are not worth waking the other threads for. Measured
# on 2 cores, whole forward passes, plain layers (BLAS's own threads) against this backend: the
# built-in chat model (192 channels) 6.1 vs 15.9 ms at 64 tokens, 42.7 vs 41.7 at 256, 197 vs
# 148 at 16 x 128; GPT-2 124M 182 vs 219 ms at 128 tokens, 408 vs 377 at 256, 837 vs 718 at 512;
# 100 decoding rows of the chat model 15.7 vs 28.3 ms. Waking a thread costs about the same
# whatever the width, and what the split gains (GELU, attention) grows with the rows.
_MIN_ROWS_PER_THREAD = 128
# Once a pass is split, attention's blocks of queries are at least this long.
_MIN_QUERIES_PER_BLOCK = 16

_state = threading.local()  # .worker is True inside the pool's threads
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads: int | None = None


def _default_threads() -> int:
    """``NUMPYLM_THREADS`` if it is set, else the number of cores this process may use."""
    env = os.environ.get("NUMPYLM_THREADS")
    if env:
        try:
            return positive_int("NUMPYLM_THREADS", int(env))
        except ValueError:
            raise ValueError(f"NUMPYLM_THREADS must be a positive integer, got {env!r}") from None
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def get_threads() -> int:
    """The number of threads the inference forward pass uses."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_threads(n: int) -> None:
    """Use ``n`` threads (one per core is best) for the inference forward pass; 1 turns the
    splitting off."""
    global _threads, _pool
    n = positive_int("threads", n)
    with _lock:
        if _pool is not None and n != _threads:
            _pool.shutdown(wait=True)
            _pool = None
        _threads = n


def _mark_worker() -> None:
    _state.worker = True


def run(tasks: Sequence[Callable[[], object]]) -> None:
    """Run every task, spread over the pool's threads, and wait until all are done.

    Tasks run one after another in the calling thread when there is one thread, one task, or
    when the caller is itself a pool thread (a pool waiting on itself could wait forever).
    An exception in a task is raised here.
    """
    global _pool
    if len(tasks) < 2 or get_threads() < 2 or getattr(_state, "worker", False):
        for task in tasks:
            task()
        return
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(get_threads(), "numpylm", initializer=_mark_worker)
        pool = _pool
    for future in [pool.submit(task) for task in tasks]:
        future.result()


def splits(rows: int) -> bool:
    """Whether work over ``rows`` rows (tokens) is split over the threads."""
    n = get_threads()
    return n > 1 and rows >= _MIN_ROWS_PER_THREAD * n


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's handle on the BLAS libraries NumPy loaded (finding them takes a few
    milliseconds, so once)."""
    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas(rows: int) -> Iterator[None]:
    """Around a whole forward pass over ``rows`` tokens: BLAS uses one thread meanwhile if the
    work is split (each of numpylm's threads calls BLAS on its own part), and keeps its own
    threads otherwise. Held for the whole pass, not per operation: switching OpenBLAS's thread
    count between operations wakes its threads each time (measured: a 512-token prefill of
    GPT-2 124M 10-15% slower). The limit is process-wide."""
    if not splits(rows):
        yield
        return
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


def run_split(tasks: Sequence[Callable[[], object]]) -> None:
    """``run(tasks)`` with BLAS held to one thread meanwhile, as each task calls BLAS on its
    own part of the work (inside ``single_threaded_blas`` this changes nothing)."""
    with _blas_controller().limit(limits=1, user_api="blas"):
        run(tasks)


def _blocks(n: int, parts: int) -> list[slice]:
    """``range(n)`` cut into ``parts`` contiguous, nearly equal slices (none empty)."""
    edges = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w + b`` (``layers.linear``; no bias when ``b`` is None), over blocks of rows.

    Args:
        x: (..., C_in) input.
        w: (C_in, C_out) weight (any strides; the LM head passes ``wte.T``).
        b: (C_out,) bias, or None.

    Returns:
        (..., C_out), in the dtype of ``x @ w``.
    """
    x2 = x.reshape(-1, x.shape[-1])  # (N, C_in)
    if not splits(len(x2)):
        return x @ w if b is None else x @ w + b
    out = np.empty((len(x2), w.shape[1]), dtype=np.result_type(x, w))  # (N, C_out)

    def rows(r: slice) -> None:
        np.matmul(x2[r], w, out=out[r])
        if b is not None:
            out[r] += b

    run_split([functools.partial(rows, r) for r in _blocks(len(x2), get_threads())])
    return out.reshape(*x.shape[:-1], w.shape[1])


def gelu(x: np.ndarray) -> np.ndarray:
    """``layers.gelu``, as ``layers.gelu_fast`` computes it, over blocks of rows."""
    x2 = x.reshape(-1, x.shape[-1])
    if not splits(len(x2)):
        return layers.gelu_fast(x)
    out = np.empty_like(x2)

    def part(r: slice) -> None:
        out[r] = layers.gelu_fast(x2[r])

    run([functools.partial(part, r) for r in _blocks(len(x2), get_threads())])
    return out.reshape(x.shape)


def attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray | None
) -> np.ndarray:
    """``layers.attention`` for inference, over blocks of queries.

    The arguments are those of ``layers.attention``, except that attention is causal by
    definition here: for T > 1, ``allowed`` must include the causal mask (as the model's
    always does). It returns only ``y`` (B, H, T, D), the attended values (the probabilities
    are not kept). Query ``t`` of ``T`` new tokens sits
    at position ``L - T + t`` and sees keys up to there, so a block of queries ending at row
    ``r`` needs the first ``L - T + r`` keys only: the part of the causal mask above the
    diagonal is skipped rather than computed and thrown away.
    """
    B, T, L = q.shape[0], q.shape[2], k.shape[2]
    if not splits(B * T):
        return layers.attention(q, k, v, allowed)[0]
    y = np.empty_like(q)  # (B, H, T, D)

    def block(r: slice) -> None:
        seen = L - T + r.stop  # keys [0, seen) are visible to some query of the block
        mask = None
        if allowed is not None:  # broadcastable to (B, H, T, L): its rows are T or 1
            mask = allowed[..., r, :seen] if allowed.shape[-2] == T else allowed[..., :seen]
        y[:, :, r] = layers.attention(q[:, :, r], k[:, :, :seen], v[:, :, :seen], mask)[0]

    # Later blocks see more keys: with 4 blocks per thread, longest first, the threads finish
    # at about the same time.
    n_blocks = min(4 * get_threads(), math.ceil(T / _MIN_QUERIES_PER_BLOCK))
    run_split([functools.partial(block, r) for r in reversed(_blocks(T, n_blocks))])
    return y
