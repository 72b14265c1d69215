"""The run directory that training and fine-tuning share: checkpoints, resuming, Ctrl-C, and
how numpylm knows a directory is its own.

From the first checkpoint on, a run directory (``--out DIR``) is a Hugging Face model directory,
so ``GPT.from_pretrained(DIR)``, ``numpylm generate --model DIR`` and ``transformers`` can read
it while training goes on:

- ``config.json``, ``model.safetensors``: the model (``GPT.save_pretrained``),
- ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``: the tokenizer,
- ``optimizer.safetensors``: AdamW's moments and step count,
- ``trainer_state.json``: the kind of run, the step, the training arguments, the loss of every
  step and the evaluations, the random generators' state, and the sha256 of each file above,
- ``.numpylm-run``: the run marker (``RUN_MARKER``): the kind of run and the process writing
  it, so that a run stopped before its first checkpoint is still known for one,
- beside them, what a kind of run adds: ``data/`` and ``eval_results.json`` (training),
  ``prompt_template.json`` (fine-tuning and preference tuning).

Whose directory is it?
----------------------
numpylm writes into, and deletes from, only a directory it can show is its own, and it never
decides that from a file's name: a user's ``trainer_state.json`` (``transformers`` writes one
too) or an empty ``.lock`` say nothing. ``survey`` reads a directory without changing it, and
counts an entry as numpylm's only when its content is what numpylm writes there:

- the marker and ``trainer_state.json`` parse, and carry numpylm's format and a kind of run;
- a checkpoint file is one that ``trainer_state.json`` lists (with ``--overwrite``, its bytes
  must also still have the sha256 recorded when it was saved);
- ``prompt_template.json`` and ``eval_results.json`` hold what numpylm writes in them, ``data/``
  holds token caches only (one-dimensional ``.npy`` arrays of token ids), ``.incoming/`` and
  ``.commit/`` hold checkpoint files only;
- a symbolic link is never numpylm's, and is never followed.

A directory is a run when its marker or its ``trainer_state.json`` is numpylm's. Everything else
in it is foreign: a new run refuses a directory holding anything foreign, and ``--overwrite``
deletes a run (every entry numpylm wrote) but refuses, naming them, when foreign files are
there too. A resumed run leaves foreign files alone (a ``README.md`` added to a run is
harmless), but refuses one that sits where numpylm would write.

A directory is locked before anything in it is written, moved or repaired: ``open_run`` takes
an ``flock`` on the directory itself (so nothing is created in it to lock it), then surveys it.
A second process is refused with the process that holds the lock, named in the marker.
Readers (``GPT.from_pretrained``, ``resume_config``, ``load_checkpoint``) take no lock and never
change anything.

How a checkpoint is saved, so that a crash at any moment leaves a good one
--------------------------------------------------------------------------
The files of a checkpoint must agree with each other (weights, optimiser and step from the same
moment), but several files cannot be replaced in one atomic operation. So a save is a small
journal:

1. Every file is written into ``DIR/.incoming/`` (each flushed to disk), ``trainer_state.json``
   last. The checkpoint in ``DIR`` itself is untouched: a crash now leaves it as it was, and
   the half-written ``.incoming`` is deleted the next time a run opens the directory.
2. ``.incoming`` is renamed to ``.commit``. A rename is atomic: this is the moment the new
   checkpoint becomes the real one.
3. The files are moved from ``.commit`` into ``DIR`` one by one (each move atomic),
   ``trainer_state.json`` last, and ``.commit`` is removed. A crash in this step leaves
   ``.commit`` behind; the next run to open the directory finishes the moves ("rolls
   forward"), and a reader meanwhile takes the step from ``.commit/trainer_state.json``.

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

import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np

from ..io import checkpoint
from ..io.checkpoint import CheckpointError
from ..models.gpt2.model import GPT, param_shapes
from ..tokens.tokenizer import MERGES_FILE, VOCAB_FILE, Tokenizer
from .data import TOKENIZER_RECORD, tokenizer_fingerprint
from .optim import AdamW

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
INCOMING = ".incoming"
COMMIT = ".commit"
STATE_FORMAT = "numpylm-trainer-state-1"
RUN_MARKER = ".numpylm-run"
"""Written into ``--out`` each time a run opens it, once the directory is locked and known to
be the run's: ``{"format": STATE_FORMAT, "kind": ..., "pid": ...}``. A directory is a run when
it holds this marker or a ``trainer_state.json`` of numpylm's; ``pid`` names the process that
holds the run, for the message a second process gets."""
LOCK_FILE = ".lock"
"""Where runs of numpylm 0.1 held their lock. Runs lock their directory itself now; a ``.lock``
found in a run (empty, or naming a numpylm process) is an old run's, anywhere else a user's."""
CACHE_DIR = "data"
"""Training: the token ids of the text, cached (``data.load_text_data``)."""
EVAL_RESULTS = "eval_results.json"
"""Training: the finished run's figures on all of the validation text."""
TEMPLATE_FILE = "prompt_template.json"
"""Fine-tuning: the prompt template the model was taught, ``{"template": ...}``."""
CHECKPOINT_FILES = (
    checkpoint.CONFIG_FILE,
    checkpoint.WEIGHTS_FILE,
    VOCAB_FILE,
    MERGES_FILE,
    "tokenizer_config.json",
    OPTIMIZER_FILE,
    TRAINER_STATE,
)
"""The files of a checkpoint (what ``save_checkpoint`` writes through ``.incoming``)."""
WRITTEN = (RUN_MARKER, INCOMING, COMMIT, CACHE_DIR, EVAL_RESULTS, TEMPLATE_FILE, *CHECKPOINT_FILES)
"""Every name numpylm writes in a run directory."""

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


# --------------------------------------------------------------------------------------------
# Opening a run directory


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
    ``numpylm generate --model DIR``, are never blocked). The lock is an ``flock`` on the
    directory: the operating system releases it when the process ends, however it ends.
    Nothing in ``out`` is written, moved or deleted before the lock is held and ``survey``
    has shown the directory to be a run (or empty).

    With ``resume``: yields the saved run, checked file by file, which must be of the same
    kind, data and dtype (a run resumed on other data would not be the same run).

    Without: yields None, after making sure that nothing of the user's is overwritten. ``out``
    may be absent, empty, or a run of the same kind that was stopped before its first
    checkpoint; anything else is refused. ``overwrite`` first deletes a run that is there (of
    either kind, with or without checkpoints), and refuses a directory holding anything
    numpylm did not write. ``reads`` are the paths the run reads (the base model, a tokenizer
    directory, the data file): ``out`` may never be one of them, nor hold one.

    A file of the run that cannot be written (a full disk) inside the ``with`` block becomes a
    ``CheckpointError`` naming the file and the checkpoint that is kept.

    Raises:
        CheckpointError: nothing to resume, a damaged checkpoint, a directory that is in use,
            holds a run already, or holds files that numpylm did not write.
        ValueError: the data or the dtype differ from the saved run's.
    """
    _refuse_reading_and_writing(out, reads)
    _make_dir(out, kind, resume)
    with _locked(out):
        found = survey(out, verify=overwrite)
        if resume:
            _check_resumable(out, kind, found)
        else:
            _check_fresh(out, kind, found, overwrite)
        if overwrite:
            _delete(out, found.mine)
        recover(out)
        checkpoint.write_json(
            out / RUN_MARKER, {"format": STATE_FORMAT, "kind": kind, "pid": os.getpid()}
        )
        run = None
        if resume:
            run = _resumable(out, kind, data_sha256=data_sha256, data=data, dtype=dtype)
        try:
            yield run
        except OSError as e:
            failed = _write_error(out, e)
            if failed is None:
                raise
            raise failed from e


def _resumable(out: Path, kind: str, *, data_sha256: str, data: str, dtype: str) -> Checkpoint:
    """The saved run in ``out``, if it can be resumed as a run of ``kind`` on this data."""
    what = KINDS[kind][1]
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


def _make_dir(out: Path, kind: str, resume: bool) -> None:
    """Make ``out`` when it is missing (a new run), or say plainly why it cannot be a run
    directory. Only a directory that did not exist is created here; nothing is written in one
    that did."""
    if out.is_symlink() and not out.exists():
        raise CheckpointError(
            f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist: "
            "create that directory, or choose another --out"
        )
    if out.exists():
        if not out.is_dir():
            what = "is a file, not" if out.is_file() else "is not"
            raise CheckpointError(f"--out {out} {what} a directory: choose another --out")
        return
    if resume:
        raise CheckpointError(
            f"{out} does not exist: there is no {KINDS[kind][0]} to resume there (leave out "
            "--resume to start one)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create --out {out}: {e.strerror}") from None


def _check_fresh(out: Path, kind: str, found: Survey, overwrite: bool) -> None:
    """Refuse to start a new run in ``out`` where it would overwrite something (see
    ``open_run``); nothing is changed here."""
    foreign = _listed(found.foreign)
    if overwrite and found.foreign:
        raise CheckpointError(
            f"--overwrite deletes only what numpylm wrote, and {out} holds files it did not "
            f"write: {foreign}. Nothing was deleted: move those away, or choose another --out"
        )
    if overwrite or (found.kind is None and not found.foreign):  # a run to delete, or empty
        return
    run = KINDS[str(found.kind)][0] if found.kind else ""
    if found.state is not None:
        again = (
            f"; it also holds files numpylm did not write ({foreign}), so --overwrite would "
            "refuse it"
            if found.foreign
            else ", or pass --overwrite to delete it and start again"
        )
        raise CheckpointError(
            f"{out} already holds a {run} (step {found.state['step']}): pass --resume to "
            f"continue it, or choose another --out{again}"
        )
    if found.foreign:
        what = (
            f"{out} is not empty ({foreign}) and is not a numpylm run"
            if found.kind is None
            else f"{out} holds files numpylm did not write ({foreign}) beside a {run}'s marker"
        )
        raise CheckpointError(
            f"{what}: nothing in it is changed, and --overwrite would not delete it either. "
            "Choose another --out (a new or empty directory)"
        )
    if found.kind != kind:
        raise CheckpointError(
            f"{out} holds a {run} that was stopped before its first checkpoint: choose another "
            "--out, or pass --overwrite to delete it and start again"
        )


def _check_resumable(out: Path, kind: str, found: Survey) -> None:
    """Refuse to resume in ``out`` unless it is a run of ``kind`` with a checkpoint, and no
    file of the user's sits where the run will write."""
    name = KINDS[kind][0]
    if found.state is None and (out / TRAINER_STATE).is_file():
        read_state(out / TRAINER_STATE)  # raises, saying what is wrong with it
    if found.kind is None:
        raise CheckpointError(
            f"{out} holds no numpylm run: there is no {name} to resume there (leave out "
            "--resume to start one)"
        )
    if found.state is None:
        raise CheckpointError(
            f"{out} has no {TRAINER_STATE}: the {KINDS[str(found.kind)][0]} there was stopped "
            "before its first checkpoint, so there is nothing to resume. Start it again without "
            "--resume"
        )
    if found.kind != kind:
        raise CheckpointError(
            f"{out / TRAINER_STATE} is not a {name} but a {KINDS[str(found.kind)][0]}: resume "
            f"it with numpylm {found.kind}"
        )
    taken = [entry for entry in found.foreign if entry.split(" (")[0] in WRITTEN]
    if taken:
        raise CheckpointError(
            f"{out} holds files numpylm did not write where the run writes: {_listed(taken)}. "
            "Nothing was changed: move them away, then resume"
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


def _delete(out: Path, names: Sequence[str]) -> None:
    """Delete the entries ``names`` of ``out``, each one ``survey`` found to be numpylm's
    (what ``--overwrite`` means). Links are never followed (there are none among them)."""
    for name in names:
        path = out / name
        if stat.S_ISDIR(path.lstat().st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the directory ``out`` (no-op where ``fcntl`` is missing).

    A second process waits up to a second for the holder to name itself in the marker, then
    is refused with its process id."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; runs are not locked there
        yield
        return
    try:
        fd = os.open(out, os.O_RDONLY)
    except OSError as e:
        raise CheckpointError(f"cannot open --out {out}: {e.strerror}") from None
    try:
        for attempt in range(21):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(out)
                if holder is None and attempt < 20:
                    time.sleep(0.05)  # the holder has not written its marker yet
                    continue
                raise CheckpointError(
                    f"{out} is in use by {holder or 'another process'}, which is writing a run "
                    "there: wait for it to finish, or choose another --out"
                ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holder(out: Path) -> str | None:
    """The live process named in ``out``'s marker, in words, or None."""
    marker = _json_file(out / RUN_MARKER, _is_marker)
    pid = marker.get("pid") if marker else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:  # it exists, and belongs to another user
        pass
    return f"process {pid} (numpylm {marker['kind']})" if marker else None


def _write_error(out: Path, e: OSError) -> CheckpointError | None:
    """The error to give for a file of the run ``out`` that could not be written (None when
    ``e`` is about another path): it names the file and the checkpoint that is kept."""
    if not e.filename or not Path(os.fspath(e.filename)).resolve().is_relative_to(out.resolve()):
        return None
    shutil.rmtree(out / INCOMING, ignore_errors=True)  # a half-written save: its space back
    kept = last_saved(out)
    then = "continue with --resume" if _current_state(out) else "start the run again"
    fix = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
    return CheckpointError(
        f"could not write {e.filename} ({e.strerror}); {kept}: {fix}, then {then}"
    )


# --------------------------------------------------------------------------------------------
# Whose directory is it? (read only)


@dataclass
class Survey:
    """What a directory holds, as numpylm sees it (``survey``).

    Attributes:
        kind: the kind of run the directory is (a key of ``KINDS``), from its marker or its
            trainer state; None when it is not a numpylm run.
        state: the trainer state of its checkpoint (the committed one while a save is being
            moved into place), or None when it has none.
        mine: the entries numpylm wrote.
        foreign: the entries numpylm did not write or cannot show it wrote, each with why
            when that is not plain from the name ("model.safetensors (changed since saved)").
    """

    kind: str | None = None
    state: dict[str, Any] | None = None
    mine: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


def survey(out: str | os.PathLike[str], *, verify: bool = False) -> Survey:
    """Sort the entries of the directory ``out`` into numpylm's and foreign ones (see the
    module docstring), reading only: nothing is changed, and no link is followed.

    ``verify`` also checks each checkpoint file against the sha256 recorded when it was saved
    (what ``--overwrite`` does before it deletes one).
    """
    out = Path(out)
    try:
        names = sorted(os.listdir(out))
    except OSError as e:
        raise CheckpointError(f"cannot read --out {out}: {e.strerror}") from None
    found = Survey()
    marker = _json_file(out / RUN_MARKER, _is_marker)
    top = _json_file(out / TRAINER_STATE, _is_state)
    commit_ok, committed = _commit(out / COMMIT)
    found.state = committed or top
    if found.state is not None:
        found.kind = str(found.state.get("kind", "train"))  # runs before kinds: training
    elif marker is not None:
        found.kind = str(marker["kind"])
    if found.kind is None:  # not a run: nothing in it is numpylm's
        found.foreign = names
        return found
    records = [state["files"] for state in (top, committed) if state is not None]
    for name in names:
        path = out / name
        why = None
        if stat.S_ISLNK(path.lstat().st_mode):
            why = "a symbolic link"
        elif name == RUN_MARKER:
            why = None if marker is not None else ""
        elif name == TRAINER_STATE:
            why = None if top is not None else ""
        elif name in CHECKPOINT_FILES:
            why = _check_recorded(path, [r[name] for r in records if name in r], verify)
        elif name == COMMIT:
            why = None if commit_ok else ""
        elif name == INCOMING:
            why = None if _holds_only(path, _is_checkpoint_file) else ""
        elif name == CACHE_DIR:
            why = None if _holds_only(path, _is_token_cache) else ""
        elif name == TEMPLATE_FILE:
            why = None if _json_file(path, _is_template) is not None else ""
        elif name == EVAL_RESULTS:
            why = None if _json_file(path, _is_eval_results) is not None else ""
        elif name == LOCK_FILE:
            why = None if _is_old_lock(path) else ""
        elif _temporary_of(path) not in WRITTEN:
            why = ""
        if why is None:
            found.mine.append(name)
        else:
            found.foreign.append(f"{name} ({why})" if why else name)
    return found


def _listed(names: Sequence[str]) -> str:
    """At most five names, for a message."""
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _regular(path: Path) -> bool:
    """A regular file, not a link to one."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _json_file(path: Path, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The JSON object in ``path`` if it is a regular file whose content passes ``check``
    (what numpylm writes there), else None."""
    if not _regular(path) or path.lstat().st_size > 1 << 30:
        return None
    try:
        document = checkpoint.read_json(path)
    except (CheckpointError, OSError):
        return None
    return document if check(document) else None


def _is_marker(document: dict[str, Any]) -> bool:
    return document.get("format") == STATE_FORMAT and document.get("kind") in KINDS


def _is_state(document: dict[str, Any]) -> bool:
    files, step = document.get("files"), document.get("step")
    return (
        document.get("format") == STATE_FORMAT
        and document.get("kind", "train") in KINDS
        and isinstance(step, int)
        and not isinstance(step, bool)
        and isinstance(files, dict)
        and all(
            name in CHECKPOINT_FILES and isinstance(digest, str) and len(digest) == 64
            for name, digest in files.items()
        )
    )


def _is_template(document: dict[str, Any]) -> bool:
    return set(document) == {"template"} and isinstance(document["template"], str)


def _is_eval_results(document: dict[str, Any]) -> bool:
    return "step" in document and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in document.values()
    )


def _is_old_lock(path: Path) -> bool:
    """A lock file of numpylm 0.1: empty, or naming the numpylm process that held it."""
    if not _regular(path) or path.lstat().st_size > 100:
        return False
    return re.fullmatch(rb"(numpylm \w+ \(pid \d+\)\n)?", path.read_bytes()) is not None


def _temporary_of(path: Path) -> str | None:
    """The file a temporary file was to become, when ``path`` is one that
    ``checkpoint.atomic_write_bytes`` left (``.NAME.XXXXXXXX.tmp``, as a process killed while
    writing NAME leaves it); None for anything else."""
    match = re.fullmatch(r"\.(.+)\.[a-z0-9_]+\.tmp", path.name)
    return match.group(1) if match is not None and _regular(path) else None


def _is_checkpoint_file(path: Path) -> bool:
    name = _temporary_of(path) or (path.name if _regular(path) else None)
    return name in CHECKPOINT_FILES


_TOKEN_CACHE = re.compile(r".+\.[0-9a-f]{16}\.(train|val)\.npy")


def _is_token_cache(path: Path) -> bool:
    """A token cache of ``data.load_text_data``: its name, and a one-dimensional array of
    unsigned token ids in it (or the temporary file of one)."""
    if _TOKEN_CACHE.fullmatch(_temporary_of(path) or ""):
        return True
    if not _TOKEN_CACHE.fullmatch(path.name) or not _regular(path):
        return False
    try:
        ids = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return False
    return ids.ndim == 1 and ids.dtype in (np.uint16, np.uint32)


def _holds_only(folder: Path, accept: Callable[[Path], bool]) -> bool:
    """``folder`` is a real directory (not a link to one) and ``accept`` takes every entry."""
    try:
        return stat.S_ISDIR(folder.lstat().st_mode) and all(map(accept, folder.iterdir()))
    except OSError:
        return False


def _commit(folder: Path) -> tuple[bool, dict[str, Any] | None]:
    """Whether ``.commit`` is numpylm's (a real directory holding checkpoint files, the ones
    its ``trainer_state.json`` lists and that one, or nothing at all), and that state."""
    try:
        if not _holds_only(folder, lambda p: p.name in CHECKPOINT_FILES and _regular(p)):
            return not os.path.lexists(folder), None
        names = {p.name for p in folder.iterdir()}
    except FileNotFoundError:  # a reader's race: the run's process just finished its moves
        return True, None
    if not names:
        return True, None  # every file moved; only the empty directory was left
    state = _json_file(folder / TRAINER_STATE, _is_state)
    if state is None or not names <= {*state["files"], TRAINER_STATE}:
        return False, None
    return True, state


def _check_recorded(path: Path, digests: list[str], verify: bool) -> str | None:
    """Why the checkpoint file ``path`` is not numpylm's, or None when a trainer state
    records it (and, with ``verify``, its bytes still have a recorded sha256)."""
    if not digests or not _regular(path):
        return ""  # no trainer state of numpylm's lists it
    if verify and sha256_file(path) not in digests:
        return "changed since numpylm saved it"
    return None


def _current_state(out: Path) -> dict[str, Any] | None:
    """The trainer state of ``out``'s checkpoint, read only: the committed one while a save is
    being moved into place, else ``trainer_state.json``; None when there is none of numpylm's."""
    committed = _commit(out / COMMIT)[1]
    return committed or _json_file(out / TRAINER_STATE, _is_state)


def read_state(path: Path) -> dict[str, Any]:
    """Read a ``trainer_state.json``, refusing one that numpylm did not write."""
    document = checkpoint.read_json(path)
    if not _is_state(document):
        if document.get("format") != STATE_FORMAT:
            why = f"format {document.get('format')!r}, expected {STATE_FORMAT!r}"
        elif document.get("kind", "train") not in KINDS:
            why = f"kind {document.get('kind')!r}, expected 'train' or 'finetune'"
        else:
            why = "it lacks the step or its files' sha256"
        raise CheckpointError(f"{path} is not a numpylm trainer state ({why})")
    return document


# --------------------------------------------------------------------------------------------
# Reading a run (no lock, nothing changed)


def saved_args(out: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """The arguments a run of ``kind`` in ``out`` was started with (``trainer_state.json``'s
    ``args``), for resuming it with some of them changed. Reads only: a save that is being
    moved into place is read from ``.commit``, and nothing is repaired."""
    name, _ = KINDS[kind]
    out = Path(out)
    path = out / TRAINER_STATE
    state = _current_state(out)
    if state is None:
        if path.is_file():
            read_state(path)  # raises, saying what is wrong with it
        raise CheckpointError(
            f"{out} has no {TRAINER_STATE}: there is no {name} to resume there (leave out "
            "--resume to start one)"
        )
    saved_kind = state.get("kind", "train")  # runs saved before kinds were recorded: training
    if saved_kind != kind:
        raise CheckpointError(
            f"{path} is not a {name} but a {KINDS.get(saved_kind, (saved_kind,))[0]}: resume it "
            f"with numpylm {saved_kind}"
        )
    if not isinstance(state.get("args"), dict):
        raise CheckpointError(f"{path} has no training arguments ('args')")
    return dict(state["args"])


def load_checkpoint(out: Path) -> Checkpoint:
    """Open the checkpoint in ``out`` for resuming, after checking every file against its
    recorded sha256. Reads only (a run's ``open_run`` finishes an interrupted save first).

    Raises:
        CheckpointError: no checkpoint, a save still being moved into place, or a file that is
            missing, truncated or corrupt. The message names the file; nothing in ``out`` is
            changed.
    """
    if (out / COMMIT).exists():
        raise CheckpointError(
            f"a checkpoint is being moved into place in {out} ({COMMIT} is there): wait for the "
            "run to finish it, or, if it was stopped, resume it (which finishes the move first)"
        )
    if not (out / TRAINER_STATE).is_file():
        raise CheckpointError(
            f"{out} has no {TRAINER_STATE}: there is no training run to resume there "
            "(leave out --resume to start one)"
        )
    state = read_state(out / TRAINER_STATE)
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
    """Which checkpoint ``out`` keeps, in words, for messages (reads only)."""
    state = _current_state(out)
    if state is None:
        return "no checkpoint had been saved yet"
    return f"{out} keeps its last checkpoint, step {state['step']}"


# --------------------------------------------------------------------------------------------
# Saving (only the process that holds the run's lock)


def save_checkpoint(
    out: Path, model: GPT, tokenizer: Tokenizer, optimizer: AdamW, state: dict[str, Any]
) -> None:
    """Write a complete checkpoint to ``out`` with the journal described in the module
    docstring. ``state`` goes to ``trainer_state.json``, with the format and the files' sha256
    added. Only the process holding ``out`` (``open_run``) may call it."""
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
    committed save, delete a half-written one. Only the process holding ``out`` may call it,
    once ``survey`` has found ``.commit`` and ``.incoming`` to be numpylm's (``open_run``)."""
    if (out / COMMIT).is_dir():
        _install(out)
    if (out / INCOMING).exists():
        shutil.rmtree(out / INCOMING)


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


class _Forgiving:
    """Stands in for ``sys.stdout`` or ``sys.stderr`` while a run trains (``outlive_output``):
    text goes on to ``stream`` until writing to it fails, and is dropped from then on."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.lost = stream is None  # started with the stream closed (`2>&-`)

    def write(self, text: str) -> int:
        if self.stream is not None and not self.lost:
            try:
                self.stream.write(text)
                self.stream.flush()  # at once: a reader that went away is noticed here
            except OSError:  # EPIPE (the reader left), ENOSPC (a full disk), EIO, EBADF
                self.lost = True
            except ValueError:
                if not self.stream.closed:  # not "I/O on a closed file": a real bug
                    raise
                self.lost = True
        return len(text)

    def flush(self) -> None:
        self.write("")

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno: the real stream's
        return getattr(self.stream, name)


@contextmanager
def outlive_output() -> Iterator[None]:
    """Keep a run going when its output goes away: the reader of a pipe leaves (``numpylm
    train ... | head -1``), the disk of a log fills up, a terminal closes. A run's output is
    the least important thing it makes, so the run goes on silently to its end and saves as
    usual; what it would have printed is dropped.

    Everything a run prints (tqdm's bar and messages, warnings) goes through ``sys.stdout``
    and ``sys.stderr``, so for the run's duration both are stand-ins that swallow a failed
    write; they are put back afterwards. Nested runs keep the outer run's stand-ins."""
    if isinstance(sys.stdout, _Forgiving):
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout = cast(TextIO, _Forgiving(sys.stdout))
    sys.stderr = cast(TextIO, _Forgiving(sys.stderr))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


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
