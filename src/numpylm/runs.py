"""The run directory that training and fine-tuning share: checkpoints, resuming, and Ctrl-C.

From the first checkpoint on, a run directory (``--out DIR``) is a Hugging Face model directory,
so ``GPT.from_pretrained(DIR)``, ``numpylm generate --model DIR`` and ``transformers`` can read
it while training goes on:

- ``config.json``, ``model.safetensors``: the model (``GPT.save_pretrained``),
- ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``: the tokenizer,
- ``optimizer.safetensors``: AdamW's moments and step count,
- ``trainer_state.json``: the kind of run, the step, the training arguments, the loss of every
  step and the evaluations, the random generators' state, and the sha256 of each file above,
- ``.numpylm-run``: written first, so a run stopped before its first checkpoint is still known
  for one (``RUN_MARKER``), and ``.lock``: held with ``flock`` while a process writes the run.

A new run never overwrites what is there: ``open_run`` refuses a directory that is not new,
empty or a run of the same kind, and one the run reads from, unless ``overwrite`` (which first
deletes everything in it).

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint
from .checkpoint import CheckpointError
from .data import TOKENIZER_RECORD, tokenizer_fingerprint
from .model import GPT, param_shapes
from .optim import AdamW
from .tokenizer import Tokenizer

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
INCOMING = ".incoming"
COMMIT = ".commit"
STATE_FORMAT = "numpylm-trainer-state-1"
RUN_MARKER = ".numpylm-run"
"""Written into ``--out`` when a run starts, before anything else: ``{"kind": ..., "format":
...}``. A directory is a run when it holds ``trainer_state.json`` (a checkpoint) or this
marker (a run stopped before its first checkpoint, which may be started again)."""
LOCK_FILE = ".lock"
"""The file a running run holds an ``flock`` on (it names the process)."""

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

KINDS = {
    "train": ("training run", "text"),
    "finetune": ("fine-tuning run", "data"),
    "align": ("preference-tuning run", "data"),
}
"""The kinds of run (``trainer_state.json``'s ``kind``, each the name of its ``numpylm``
command) and the words messages use for them."""


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


@contextmanager
def open_run(
    out: Path,
    kind: str,
    *,
    resume: bool,
    data_sha256: str,
    data: str,
    dtype: str,
    overwrite: bool = False,
    reads: Sequence[str | os.PathLike[str] | None] = (),
) -> Iterator[Checkpoint | None]:
    """Open ``out`` for a run of ``kind`` (a key of ``KINDS``) on the data file
    ``data`` (whose sha256 is ``data_sha256``), and hold it: the directory is locked until the
    ``with`` block ends, so a second run cannot write into it meanwhile (readers, such as
    ``numpylm generate --model DIR``, are never blocked). The lock is an ``flock``: the
    operating system releases it when the process ends, however it ends.

    With ``resume``: yields the saved run, checked file by file, which must be of the same
    kind, data and dtype (a run resumed on other data would not be the same run).

    Without: yields None, after making sure that nothing of the user's is overwritten. ``out``
    may be absent, empty, or a run of the same kind that was stopped before its first
    checkpoint (see ``RUN_MARKER``); anything else is refused, unless ``overwrite``, which first
    deletes everything in ``out``. ``reads`` are the paths the run reads (the base model, a
    tokenizer directory, the data file): ``out`` may never be one of them, nor hold one.

    Raises:
        CheckpointError: nothing to resume, a damaged checkpoint, a directory that is in use,
            holds a run already, or holds files that are not a run.
        ValueError: the data or the dtype differ from the saved run's.
    """
    _refuse_reading_and_writing(out, reads)
    if not resume:
        _check_fresh(out, kind, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out, kind):
        if not resume:
            if overwrite:
                _empty(out)
            recover(out)
            checkpoint.write_json(out / RUN_MARKER, {"kind": kind, "format": STATE_FORMAT})
            yield None
            return
        yield _resumable(out, kind, data_sha256=data_sha256, data=data, dtype=dtype)


def _resumable(out: Path, kind: str, *, data_sha256: str, data: str, dtype: str) -> Checkpoint:
    """The saved run in ``out``, if it can be resumed as a run of ``kind`` on this data."""
    what = KINDS[kind][1]
    saved_args(out, kind)  # refuses another kind of run before anything is loaded
    run = load_checkpoint(out)
    if run.state.get("data_sha256") != data_sha256:
        verb = {"train": "trained", "finetune": "fine-tuned"}.get(kind, "tuned")
        raise ValueError(
            f"{data} is not the {what} this run was {verb} on (its sha256 differs from the one "
            f"in {TRAINER_STATE}); resume with the original file, or start a new run"
        )
    if run.state["dtype"] != dtype:
        raise ValueError(f"the run was trained in {run.state['dtype']}; cannot resume in {dtype}")
    return run


def _check_fresh(out: Path, kind: str, overwrite: bool) -> None:
    """Refuse to start a new run in ``out`` where it would overwrite something (see
    ``open_run``); nothing is changed here."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CheckpointError(f"--out {out} is a file, not a directory: choose another --out")
    if overwrite:
        return
    if (out / TRAINER_STATE).is_file() or (out / COMMIT).is_dir():
        state = out / TRAINER_STATE
        step = checkpoint.read_json(state).get("step") if state.is_file() else "?"
        raise CheckpointError(
            f"{out} already holds a training run (step {step}): pass --resume to continue it, "
            "choose another --out, or pass --overwrite to delete it and start again"
        )
    marker = out / RUN_MARKER
    if marker.is_file():  # a run stopped before its first checkpoint
        started = checkpoint.read_json(marker).get("kind")
        if started == kind:
            return
        raise CheckpointError(
            f"{out} holds a {KINDS.get(str(started), ('run of another kind',))[0]} that was "
            "stopped before its first checkpoint: choose another --out, or pass --overwrite"
        )
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if others:
        listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise CheckpointError(
            f"{out} is not empty ({listed}) and is not a numpylm run: nothing in it is "
            "overwritten. Choose another --out (a new or empty directory), or pass --overwrite "
            "to delete everything in it first"
        )


def _refuse_reading_and_writing(out: Path, reads: Sequence[str | os.PathLike[str] | None]) -> None:
    """Refuse an ``out`` that is, or holds, a path the run reads."""
    target = out.resolve()
    for read in reads:
        if read is None or not os.path.exists(read):
            continue  # a Hub id, or nothing: not a local path
        source = Path(read).resolve()
        if source == target or target in source.parents:
            raise CheckpointError(
                f"--out {out} is where the run reads {read} from: writing there would destroy "
                "what is being read. Choose another --out"
            )


def _empty(out: Path) -> None:
    """Delete everything in ``out`` but the lock (what ``--overwrite`` means)."""
    for path in out.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextmanager
def _locked(out: Path, kind: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``out/.lock`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; runs are not locked there
        yield
        return
    with open(out / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise CheckpointError(
                f"{out} is in use: {holder} is writing a run there. Wait for it to finish, or "
                "choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"numpylm {kind} (pid {os.getpid()})\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


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
        raise CheckpointError(
            f"{path} is not a {name} but a {KINDS.get(saved_kind, (saved_kind,))[0]}: resume it "
            f"with numpylm {saved_kind}"
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
    record_tokenizer(model.save_pretrained(incoming), tokenizer)
    tokenizer.save_pretrained(incoming)
    checkpoint.write_safetensors(incoming / OPTIMIZER_FILE, optimizer.state_dict())
    digests = {p.name: sha256_file(p) for p in sorted(incoming.iterdir())}
    record = {"format": STATE_FORMAT, **state, "files": digests}
    checkpoint.write_json(incoming / TRAINER_STATE, record)
    _fsync_dir(incoming)
    os.replace(incoming, out / COMMIT)  # the commit point
    _fsync_dir(out)
    _install(out)


def record_tokenizer(model_dir: Path, tokenizer: Tokenizer) -> None:
    """Note in ``model_dir``'s ``config.json`` (as ``TOKENIZER_RECORD``) which tokenizer the
    model was trained with, so that ``numpylm.load`` can tell when the tokenizer files beside
    it are another's."""
    path = model_dir / checkpoint.CONFIG_FILE
    fingerprint = tokenizer_fingerprint(tokenizer)
    checkpoint.write_json(path, checkpoint.read_json(path) | {TOKENIZER_RECORD: fingerprint})


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
