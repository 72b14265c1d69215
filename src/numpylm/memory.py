"""What a command will need in memory, estimated from the shapes it was given, before anything
is allocated.

A model of ``n_layer=1_000_000_000``, a context of a million tokens or an 8 GB text file would
otherwise start, fill the machine's memory, and die halfway with a ``MemoryError`` (or be
killed by the system) after minutes of work. The arithmetic is cheap, so numpylm does it first
and refuses at once, with the numbers:

    training needs about 12.0 TiB, this machine has 23.5 GiB of which 22.2 GiB free: ...

The estimates count the arrays that dominate, each from its shape (float32: 4 bytes a number):

- the parameters, ``P = V*C + n_ctx*C + n_layer*(12*C*C + 13*C) + 2*C`` numbers, and beside
  them, in training, their gradients and AdamW's two moments (``4 P`` in all);
- the activations the backward pass reads (``models.gpt2.backward.Tape``): per layer and token
  ``16 C`` numbers and ``H T`` attention probabilities, and the (B, T, V) logits with their
  softmax and gradient;
- the KV cache, ``2 * n_layer * n_ctx * C`` numbers a sequence, and the (B, V) scores;
- a text file: its bytes, the decoded text and its parts, and the token ids, which the
  tokenizer returns as a Python list (40 bytes an id: a pointer and an int object), counted at
  one id per 4 bytes of text, GPT-2's usual rate.

They are estimates ("about"): NumPy's temporaries come and go, and Python objects have their
overheads. Each is meant to be close to the peak, so that what is refused could never have
run, and what runs is not refused.

This module is at the bottom of the package, beside ``checks``: it imports nothing of numpylm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PER_TENSOR = 600
"""Bytes of Python bookkeeping per tensor (the array object, its name, a dict entry): what a
model of a million tiny layers costs beyond its numbers."""

TENSORS_PER_LAYER = 12
"""The tensors of one GPT-2 block (``model.param_shapes``)."""

BYTES_PER_TOKEN_ID = 40
"""A token id in the Python list the tokenizer returns: an 8-byte pointer and a 32-byte int."""

TEXT_BYTES_PER_TOKEN = 4
"""About how many bytes of English text one GPT-2 token covers."""


def available() -> tuple[int, int] | None:
    """``(total, free)`` bytes of memory, or None where the system does not say.

    Linux: ``MemTotal`` and ``MemAvailable`` of ``/proc/meminfo`` (available counts the page
    cache the kernel gives back on demand, which "free" memory does not), each capped by the
    memory limit of the process's control group (a container), if it has one. Elsewhere: the
    POSIX page counts.
    """
    info: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024  # the file's "kB" are KiB
    except (OSError, ValueError, IndexError):
        pass
    if "MemTotal" in info and "MemAvailable" in info:
        total, free = info["MemTotal"], info["MemAvailable"]
    else:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total = os.sysconf("SC_PHYS_PAGES") * page
            free = os.sysconf("SC_AVPHYS_PAGES") * page
        except (AttributeError, ValueError, OSError):
            return None
    limit = _cgroup_limit()
    if limit is not None:
        total, free = min(total, limit[0]), min(free, max(0, limit[0] - limit[1]))
    return total, free


def _cgroup_limit() -> tuple[int, int] | None:
    """``(limit, used)`` of the control group v2 this process runs in, if it sets a limit."""
    try:
        group = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
        base = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        used = (base / "memory.current").read_text().strip()
        return (int(limit), int(used)) if limit != "max" else None
    except (OSError, IndexError, ValueError):
        return None


def fits(nbytes: int, what: str, advice: str) -> None:
    """Refuse, before it starts, work that needs more memory than the machine has free.

    Args:
        nbytes: what the work needs, estimated.
        what: the work, as the subject of "needs about ...", e.g. "training".
        advice: what to do instead, e.g. "use a smaller --n-embd".

    Raises:
        ValueError: "WHAT needs about X, this machine has Y of which Z free: ADVICE". Where the
            system does not say how much memory it has, nothing is refused.
    """
    memory = available()
    if memory is not None and nbytes > memory[1]:
        total, free = memory
        raise ValueError(
            f"{what} needs about {size(nbytes)}, this machine has {size(total)} of which "
            f"{size(free)} free: {advice}"
        )


def size(nbytes: float) -> str:
    """A number of bytes for people: ``size(25_500_000_000)`` is ``'23.7 GiB'``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def num_params(vocab_size: int, n_ctx: int, n_layer: int, n_embd: int) -> int:
    """The parameters of a GPT-2 of this shape (``model.param_shapes``, summed without building
    it): the two embeddings, ``n_layer`` blocks and the final layer norm."""
    C = n_embd
    return vocab_size * C + n_ctx * C + n_layer * (12 * C * C + 13 * C) + 2 * C


def model_bytes(vocab_size: int, n_ctx: int, n_layer: int, n_embd: int, itemsize: int) -> int:
    """A model's parameters in memory: its numbers and the Python objects that hold them."""
    P = num_params(vocab_size, n_ctx, n_layer, n_embd)
    return P * itemsize + (TENSORS_PER_LAYER * n_layer + 4) * PER_TENSOR


def loading_bytes(vocab_size: int, n_ctx: int, n_layer: int, n_embd: int, itemsize: int = 4) -> int:
    """The peak of loading a model: the tensors as read from the file and the model's own
    arrays made from them (a converted or transposed copy), twice the model."""
    return 2 * model_bytes(vocab_size, n_ctx, n_layer, n_embd, itemsize)


def training_bytes(
    vocab_size: int,
    n_ctx: int,
    n_layer: int,
    n_head: int,
    n_embd: int,
    *,
    batch_size: int,
    itemsize: int = 4,
    threads: int = 1,
    steps: int = 0,
) -> int:
    """The peak of a training step on (batch_size, n_ctx) windows: the parameters, their
    gradients (one set per thread) and AdamW's two moments; the activations of the whole batch
    (the ``backward.Tape`` of every layer, then the logits, their softmax and gradient);
    and the loss of every step, which the run keeps and saves (``steps`` of them)."""
    model = model_bytes(vocab_size, n_ctx, n_layer, n_embd, itemsize)
    tokens = batch_size * n_ctx
    per_layer = tokens * (16 * n_embd + n_head * n_ctx)  # the record, attention included
    activations = (n_layer * per_layer + tokens * (2 * n_embd + 3 * vocab_size)) * itemsize
    losses = steps * 64  # a float in a list, and its text in trainer_state.json
    return (3 + threads) * model + activations + losses


def generation_bytes(
    vocab_size: int,
    n_ctx: int,
    n_layer: int,
    n_head: int,
    n_embd: int,
    *,
    batch_size: int,
    itemsize: int = 4,
    use_cache: bool = True,
    history: bool = False,
) -> int:
    """What continuing ``batch_size`` sequences adds to the model: the KV cache (allocated for
    the whole context), the first pass over a full window (one layer's attention and MLP at a
    time), the (B, V) scores with the sampler's copies of them, and the penalties' (B, V)
    history of counts."""
    cache = 2 * n_layer * n_ctx * n_embd * itemsize if use_cache else 0
    window = n_ctx * (4 * n_embd + n_head * n_ctx) * itemsize
    scores = 4 * vocab_size * itemsize + (5 * vocab_size if history else 0)
    return batch_size * (cache + window + scores)


def text_bytes(file_size: int) -> int:
    """Reading a text file of ``file_size`` bytes and tokenising it: the bytes, the decoded
    text, its parts (the training and validation split) and their UTF-8 again (for the
    checksum), and the token ids as a Python list, at ``TEXT_BYTES_PER_TOKEN``."""
    return 4 * file_size + file_size // TEXT_BYTES_PER_TOKEN * BYTES_PER_TOKEN_ID


def check_model(config: Any, itemsize: int, doing: str, source: object = None) -> None:
    """Refuse a model whose parameters would not fit in the free memory, before a single array
    (or the table of ``model.param_shapes``, n_layer entries long) is made.

    Args:
        config: a ``GPTConfig`` (its ``vocab_size``, ``n_ctx``, ``n_layer`` and ``n_embd``), or
            a config that counts its own parameters and tensors (``LlamaConfig``:
            ``num_params()``, ``num_tensors()``).
        itemsize: bytes per number of the model's dtype.
        doing: "building" (``model_bytes``) or "loading" (``loading_bytes``).
        source: the directory a loaded model comes from, for the message.
    """
    if hasattr(config, "num_params"):  # another family: the same sums, its own counts
        P, tensors = config.num_params(), config.num_tensors()
    else:
        shape = (config.vocab_size, config.n_ctx, config.n_layer, config.n_embd)
        P, tensors = num_params(*shape), TENSORS_PER_LAYER * config.n_layer + 4
    need = P * itemsize + tensors * PER_TENSOR
    where = f" from {source}" if source is not None else ""
    fits(
        2 * need if doing == "loading" else need,  # loading: the file's tensors, then the model's
        f"{doing} a model of {P:,} parameters{where} ({config})",
        "use a smaller model (n_layer, n_embd, n_ctx or vocab_size)",
    )
