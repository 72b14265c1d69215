"""The run directory that training and fine-tuning share: checkpoints, resuming, and Ctrl-C.

From the first checkpoint on, a run directory (``--out DIR``) is a Hugging Face model directory,
so ``GPT.from_pretrained(DIR)``, ``numpylm generate --model DIR`` and ``transformers`` can read
it while training goes on:

- ``config.json``, ``model.safetensors``: the model (``GPT.save_pretrained``),
- ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``: the tokenizer,
- ``optimizer.safetensors``: AdamW's moments and step count,
- ``trainer_state.json``: the kind of run, the step, the training arguments, the loss of every
  step and the evaluations, the random generators' state, and the sha256 of each file above.

How a checkpoint is saved, so that a crash at any moment leaves a good one
--------------------------------------------------------------------------
The files of a checkpoint must agree with each other (weights, optimiser and step from the same
moment), but several files cannot be replaced in one atomic operation. So a save is a small
journal:

1. Every file is written into ``DIR/.incoming/`` (each flushed to disk), ``trainer_state.json``
   last. The checkpoint in ``DIR`` itself is untouched: a crash now leaves it as it was, and
   the half-written ``.incoming`` is deleted the next time the directory is opened.
2. ``.incoming`` is renamed to ``.commit``. A rename is atomic: this is the moment the new
   checkpoint becomes the real one.
3. The files are moved from ``.commit`` into ``DIR`` one by one (each move atomic),
   ``trainer_state.json`` last, and ``.commit`` is removed. A crash in this step leaves
   ``.commit`` behind; opening the directory finishes the moves ("rolls forward").

Within one run ``config.json`` and the tokenizer never change, so a reader that knows nothing of
the journal (``transformers``) still always sees weights and config that belong together.
Resuming checks every file against the sha256 recorded in ``trainer_state.json``, so a file
that is truncated or damaged later (a full disk, a bad copy) is reported, never trained on.

Resuming is exact: the weights, the optimiser state and the random generators' state are saved
bit for bit, the learning rate is a function of the step, and every random stream of a run is
seeded from the run's seed and one of the ``STREAM_*`` tags below, so an interrupted and resumed
run computes the same losses as one that never stopped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint
from .checkpoint import CheckpointError
from .model import GPT, param_shapes
from .optim import AdamW
from .tokenizer import Tokenizer

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
INCOMING = ".incoming"
COMMIT = ".commit"
STATE_FORMAT = "numpylm-trainer-state-1"

# Each kind of randomness of a run draws from its own stream, np.random.default_rng([seed, TAG,
# ...]), so that changing one (say, turning dropout on) leaves the others as they were.
STREAM_BATCHES = 1
"""Pretraining: where each batch's windows start."""
STREAM_ORDER = 2
"""Fine-tuning: the order of the examples in each epoch (``[seed, STREAM_ORDER, epoch]``)."""
STREAM_SPLIT = 3
"""Fine-tuning: which examples are held out for validation."""
STREAM_DROPOUT = 4
"""Both: the dropout masks of each step (``[seed, STREAM_DROPOUT, step]``)."""

KINDS = {"train": ("training run", "text"), "finetune": ("fine-tuning run", "data")}
"""The kinds of run (``trainer_state.json``'s ``kind``) and the words messages use for them."""


@dataclass
class Checkpoint:
    """A run opened for resuming: its model, tokenizer, optimiser state and trainer state."""

    model: GPT
    tokenizer: Tokenizer
    optimizer_state: dict[str, np.ndarray]
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def losses(self) -> list[float]:
        return [float(v) for v in self.state["losses"]]

    @property
    def history(self) -> list[dict[str, float]]:
        return list(self.state["history"])

    @property
    def elapsed(self) -> float:
        """Seconds of training before this process."""
        return float(self.state.get("elapsed", 0.0))


def open_run(
    out: Path, kind: str, *, resume: bool, data_sha256: str, data: str, dtype: str
) -> Checkpoint | None:
    """Open ``out`` for a run of ``kind`` (``"train"`` or ``"finetune"``) on the data file
    ``data`` (whose sha256 is ``data_sha256``).

    With ``resume``: the saved run, checked file by file, that must be of the same kind, data
    and dtype (a run resumed on other data would not be the same run). Without: None, after
    refusing a directory that already holds a run.

    Raises:
        CheckpointError: nothing to resume, a damaged checkpoint, or a run already there.
        ValueError: the data or the dtype differ from the saved run's.
    """
    what = KINDS[kind][1]
    if not resume:
        recover(out)
        if (out / TRAINER_STATE).is_file():
            step = checkpoint.read_json(out / TRAINER_STATE).get("step")
            raise CheckpointError(
                f"{out} already holds a training run (step {step}): pass --resume to continue "
                "it, or choose another --out"
            )
        return None
    saved_args(out, kind)  # refuses another kind of run before anything is loaded
    run = load_checkpoint(out)
    if run.state.get("data_sha256") != data_sha256:
        verb = "trained" if kind == "train" else "fine-tuned"
        raise ValueError(
            f"{data} is not the {what} this run was {verb} on (its sha256 differs from the one "
            f"in {TRAINER_STATE}); resume with the original file, or start a new run"
        )
    if run.state["dtype"] != dtype:
        raise ValueError(f"the run was trained in {run.state['dtype']}; cannot resume in {dtype}")
    return run


def saved_args(out: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """The arguments a run of ``kind`` in ``out`` was started with (``trainer_state.json``'s
    ``args``), for resuming it with some of them changed."""
    name, _ = KINDS[kind]
    path = Path(out) / TRAINER_STATE
    if (Path(out) / COMMIT).is_dir():
        recover(Path(out))  # a save was committed but not yet moved into place: finish it
    if not path.is_file():
        raise CheckpointError(
            f"{out} has no {TRAINER_STATE}: there is no {name} to resume there (leave out "
            "--resume to start one)"
        )
    state = checkpoint.read_json(path)
    saved_kind = state.get("kind", "train")  # runs saved before kinds were recorded: training
    if saved_kind != kind:
        other = "numpylm finetune" if saved_kind == "finetune" else "numpylm train"
        raise CheckpointError(
            f"{path} is not a {name} but a {KINDS.get(saved_kind, (saved_kind,))[0]}: resume it "
            f"with {other}"
        )
    if not isinstance(state.get("args"), dict):
        raise CheckpointError(f"{path} has no training arguments ('args')")
    return dict(state["args"])


def save_checkpoint(
    out: Path, model: GPT, tokenizer: Tokenizer, optimizer: AdamW, state: dict[str, Any]
) -> None:
    """Write a complete checkpoint to ``out`` with the journal described in the module
    docstring. ``state`` goes to ``trainer_state.json``, with the format and the files' sha256
    added."""
    recover(out)
    incoming = out / INCOMING
    incoming.mkdir(parents=True)
    model.save_pretrained(incoming)
    tokenizer.save_pretrained(incoming)
    checkpoint.write_safetensors(incoming / OPTIMIZER_FILE, optimizer.state_dict())
    digests = {p.name: sha256_file(p) for p in sorted(incoming.iterdir())}
    record = {"format": STATE_FORMAT, **state, "files": digests}
    checkpoint.write_json(incoming / TRAINER_STATE, record)
    _fsync_dir(incoming)
    os.replace(incoming, out / COMMIT)  # the commit point
    _fsync_dir(out)
    _install(out)


def _install(out: Path) -> None:
    """Move the committed files from ``.commit`` into ``out``, ``trainer_state.json`` last."""
    commit = out / COMMIT
    names = sorted(p.name for p in commit.iterdir())
    names.sort(key=lambda name: name == TRAINER_STATE)  # stable: only moves it to the end
    for name in names:
        os.replace(commit / name, out / name)
    _fsync_dir(out)
    commit.rmdir()


def recover(out: Path) -> None:
    """Bring ``out`` back to one consistent checkpoint after a crash during a save: finish a
    committed save, delete a half-written one."""
    if (out / COMMIT).is_dir():
        _install(out)
    if (out / INCOMING).exists():
        shutil.rmtree(out / INCOMING)


def load_checkpoint(out: Path) -> Checkpoint:
    """Open the checkpoint in ``out`` for resuming, after checking every file against its
    recorded sha256.

    Raises:
        CheckpointError: no checkpoint, or a file that is missing, truncated or corrupt. The
            message names the file; nothing in ``out`` is changed.
    """
    if not (out / TRAINER_STATE).is_file() and not (out / COMMIT).is_dir():
        raise CheckpointError(
            f"{out} has no {TRAINER_STATE}: there is no training run to resume there "
            "(leave out --resume to start one)"
        )
    recover(out)
    state = checkpoint.read_json(out / TRAINER_STATE)
    if state.get("format") != STATE_FORMAT or not isinstance(state.get("files"), dict):
        raise CheckpointError(
            f"{out / TRAINER_STATE} is not a numpylm trainer state (format "
            f"{state.get('format')!r}, expected {STATE_FORMAT!r})"
        )
    for name, digest in state["files"].items():
        path = out / name
        if not path.is_file():
            raise CheckpointError(f"the checkpoint in {out} is incomplete: {name} is missing")
        if sha256_file(path) != digest:
            raise CheckpointError(
                f"{path} is corrupt or truncated: its sha256 differs from the one recorded in "
                f"{TRAINER_STATE} when step {state.get('step')} was saved. The run cannot be "
                "resumed from it exactly; restore the file from a copy, or start a new run"
            )
    model = GPT.from_pretrained(out, dtype=np.dtype(state["dtype"]))
    # The file lists tensors alphabetically; a fresh model has them in param_shapes' order. The
    # order matters for exactness: the global gradient norm adds the tensors' shares in it.
    model.params = {name: model.params[name] for name in param_shapes(model.config)}
    tokenizer = Tokenizer.from_pretrained(out)
    optimizer_state = checkpoint.read_safetensors(out / OPTIMIZER_FILE)
    # the step count is a scalar (checkpoints read through safetensors' safe_open had shape (1,))
    optimizer_state["step"] = optimizer_state["step"].reshape(())
    return Checkpoint(model, tokenizer, optimizer_state, state)


def last_saved(out: Path) -> str:
    """Which checkpoint ``out`` keeps, in words, for messages."""
    if not (out / TRAINER_STATE).is_file():
        return "no checkpoint had been saved yet"
    step = checkpoint.read_json(out / TRAINER_STATE)["step"]
    return f"{out} keeps its last checkpoint, step {step}"


@contextmanager
def deferred_sigint() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a request (``interrupted()`` becomes True) that the loop
    answers after the current step, so the weights are never saved half-updated. A second
    Ctrl-C raises KeyboardInterrupt at once. Only the main thread can own signal handlers;
    elsewhere Ctrl-C keeps its usual meaning."""
    pressed = [False]

    def handle(signum: int, frame: object) -> None:
        if pressed[0]:
            raise KeyboardInterrupt
        pressed[0] = True

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # e.g. under nohup: keep ignoring
    ):
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield lambda: pressed[0]
    finally:
        signal.signal(signal.SIGINT, previous)


def sha256_text(text: str) -> str:
    """The hex sha256 of a text's UTF-8 bytes (how a run recognises its data)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (the renames in it) to disk; a no-op where directories
    cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
