"""The run directory's bookkeeping, tested through runs.py's own functions on a tiny model: the
save journal (which file arrives when), resuming, the lock, what a new run refuses, Ctrl-C.

These tests were written for the survivors of a mutation run over ``runs.py``
(docs/reliability.md, "Mutation testing"); each asserts something a one-line bug there changes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from numpylm import GPT, GPTConfig
from numpylm.io.checkpoint import CheckpointError
from numpylm.models.gpt2.model import param_shapes
from numpylm.tokens.tokenizer import Tokenizer
from numpylm.training import runs
from numpylm.training.data import TOKENIZER_RECORD, tokenizer_fingerprint
from numpylm.training.optim import AdamW

STATE = "trainer_state.json"  # the names are part of the on-disk format: spelled out here
MARKER = ".numpylm-run"


def byte_tokenizer() -> Tokenizer:
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"cd": 257}
    return Tokenizer.from_ranks(ranks, name="bytes")


def tiny(seed: int = 0) -> tuple[GPT, AdamW]:
    model = GPT(GPTConfig(vocab_size=259, n_ctx=8, n_layer=1, n_head=2, n_embd=8), seed=seed)
    optimizer = AdamW(model.params, lr=1e-2)
    rng = np.random.default_rng(seed)
    optimizer.step(
        {k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in model.params.items()}
    )
    return model, optimizer


def trainer_state(step: int, kind: str = "train", **more: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "step": step,
        "dtype": "float32",
        "data_sha256": runs.sha256_text("the data"),
        "args": {"steps": 12, "lr": 0.01},
        "losses": [3.5, 3.25][:step],
        "history": [{"step": step, "val_loss": 3.0}],
        **more,
    }


def save(out: Path, step: int, seed: int = 0, **more: Any) -> tuple[GPT, AdamW]:
    model, optimizer = tiny(seed)
    runs.save_checkpoint(out, model, byte_tokenizer(), optimizer, trainer_state(step, **more))
    return model, optimizer


def read_state(out: Path) -> dict[str, Any]:
    return json.loads((out / STATE).read_text())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# The journal


def test_trainer_state_arrives_last_and_only_describes_files_already_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``save_checkpoint`` (its ``_install`` included) is watched through ``os.replace``:
    whenever a ``trainer_state.json`` lands in the run directory, every file it lists must already
    be there with the recorded sha256, so a crash at any moment never pairs a new state with
    old weights."""
    out = tmp_path / "run"
    out.mkdir()
    real_replace = os.replace
    arrivals: list[str] = []

    def watched(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        dst = Path(dst)
        if dst.parent == out and Path(src).parent.name == runs.COMMIT:
            arrivals.append(dst.name)
            if dst.name == STATE:
                for name, recorded in read_state(out)["files"].items():
                    installed = (out / name).is_file() and digest(out / name) == recorded
                    assert installed, f"{STATE} arrived before {name}"

    monkeypatch.setattr(os, "replace", watched)
    save(out, 1, seed=0)
    first = list(arrivals)
    arrivals.clear()
    save(out, 2, seed=1)  # over a checkpoint: the old files are there, with other contents
    monkeypatch.undo()
    assert first == arrivals and arrivals[-1] == STATE
    assert set(arrivals) == {p.name for p in out.iterdir()} - {MARKER, ".lock"}
    assert read_state(out)["step"] == 2


def test_a_checkpoint_records_every_file_and_reads_back_exactly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    model, optimizer = save(out, 2, elapsed=12.5)
    state = read_state(out)
    assert state["format"] == "numpylm-trainer-state-1"
    files = {p.name for p in out.iterdir()} - {STATE}
    assert set(state["files"]) == files
    assert {"model.safetensors", "config.json", "optimizer.safetensors", "vocab.json"} <= files
    assert all(digest(out / name) == d for name, d in state["files"].items())
    assert not (out / runs.INCOMING).exists() and not (out / runs.COMMIT).exists()
    config = json.loads((out / "config.json").read_text())
    assert config[TOKENIZER_RECORD] == tokenizer_fingerprint(byte_tokenizer())

    run = runs.load_checkpoint(out)
    assert run.step == 2 and run.losses == [3.5, 3.25] and run.elapsed == 12.5
    assert run.history == [{"step": 2, "val_loss": 3.0}]
    assert list(run.model.params) == list(param_shapes(model.config))  # the gradient-norm order
    assert {p.dtype for p in run.model.params.values()} == {np.dtype(np.float32)}
    for name, p in model.params.items():
        np.testing.assert_array_equal(run.model.params[name], p)
    expected = optimizer.state_dict()
    assert set(run.optimizer_state) == set(expected) and run.optimizer_state["step"].shape == ()
    for name, value in expected.items():
        np.testing.assert_array_equal(run.optimizer_state[name], value)
    assert run.tokenizer.encode("abcd ab") == byte_tokenizer().encode("abcd ab")


def test_elapsed_is_zero_for_a_run_that_never_recorded_it(tmp_path: Path) -> None:
    save(tmp_path, 1)
    assert runs.load_checkpoint(tmp_path).elapsed == 0.0


def test_recover_rolls_a_commit_forward_and_drops_a_half_written_save(tmp_path: Path) -> None:
    save(tmp_path, 1, seed=0)
    committed = tmp_path / runs.COMMIT
    committed.mkdir()
    (committed / "model.safetensors").write_bytes(b"new weights")
    (committed / STATE).write_text('{"step": 2}')
    incoming = tmp_path / runs.INCOMING / "nested"
    incoming.mkdir(parents=True)
    (incoming / "x").write_text("half")
    runs.recover(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == b"new weights"
    assert read_state(tmp_path) == {"step": 2}
    assert not committed.exists() and not (tmp_path / runs.INCOMING).exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("delete", r"incomplete: optimizer\.safetensors is missing"),
        (
            "flip",
            r"optimizer\.safetensors is corrupt or truncated: its sha256 differs from the "
            r"one recorded in trainer_state\.json when step 1 was saved\. The run cannot be "
            r"resumed from it exactly; restore the file from a copy, or start a new run$",
        ),
        ("format", r"is not a numpylm trainer state \(format 'other', expected "),
        ("no state", r"has no trainer_state\.json: there is no training run to resume"),
    ],
)
def test_load_checkpoint_names_the_damage_and_changes_nothing(
    tmp_path: Path, damage: str, message: str
) -> None:
    save(tmp_path, 1)
    target = tmp_path / "optimizer.safetensors"
    if damage == "delete":
        target.unlink()
    elif damage == "flip":
        raw = bytearray(target.read_bytes())
        raw[-1] ^= 1
        target.write_bytes(bytes(raw))
    elif damage == "format":
        (tmp_path / STATE).write_text(json.dumps(read_state(tmp_path) | {"format": "other"}))
    else:
        (tmp_path / STATE).unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CheckpointError, match=message):
        runs.load_checkpoint(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_state_without_a_file_list_is_refused(tmp_path: Path) -> None:
    save(tmp_path, 1)
    state = read_state(tmp_path)
    del state["files"]
    (tmp_path / STATE).write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="is not a numpylm trainer state"):
        runs.load_checkpoint(tmp_path)


def test_last_saved_says_which_checkpoint_is_kept(tmp_path: Path) -> None:
    assert runs.last_saved(tmp_path) == "no checkpoint had been saved yet"
    save(tmp_path, 2)
    assert runs.last_saved(tmp_path) == f"{tmp_path} keeps its last checkpoint, step 2"


# ------------------------------------------------------------------------------------------------
# Opening a run


def open_run(out: Path, kind: str = "train", **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        resume=False, data_sha256=runs.sha256_text("the data"), data="f.txt", dtype="float32"
    )
    return runs.open_run(out, kind, **(args | kw))


def test_a_new_run_is_marked_and_locked_while_it_is_open(tmp_path: Path) -> None:
    """The marker names the kind and the process; the lock is an flock on the directory itself
    (no file is made to hold it), so a second opening, even from this process, is refused with
    the holder named, and the lock is free once the first ``with`` ends."""
    out = tmp_path / "a" / "run"
    pid = os.getpid()
    with open_run(out, "finetune") as opened:
        assert opened is None
        marker = json.loads((out / MARKER).read_text())
        assert marker == {"kind": "finetune", "format": "numpylm-trainer-state-1", "pid": pid}
        assert os.listdir(out) == [MARKER]
        with pytest.raises(CheckpointError) as refused:
            with open_run(out, "finetune"):
                pass
        assert str(refused.value) == (
            f"{out} is in use by process {pid} (numpylm finetune), which is writing a run "
            "there: wait for it to finish, or choose another --out"
        )
    with open_run(out, "finetune"):  # the lock is free again
        pass
    assert os.listdir(out) == [MARKER]


def test_a_holder_that_names_no_live_process_is_another_process(tmp_path: Path) -> None:
    """While the directory is locked, a marker naming no live process (or no marker) gives
    "another process", after waiting for the holder to write its marker."""
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        marker = {"format": "numpylm-trainer-state-1", "kind": "train", "pid": 2**22 + 1}
        (out / MARKER).write_text(json.dumps(marker))  # above Linux's pid_max: not alive
        with pytest.raises(CheckpointError) as refused:
            with open_run(out):
                pass
        assert str(refused.value) == (
            f"{out} is in use by another process, which is writing a run there: wait for it "
            "to finish, or choose another --out"
        )
        for pid in (None, 0, -1, True, "1", 2**22 + 1):
            (out / MARKER).write_text(json.dumps(marker | {"pid": pid}))
            assert runs._holder(out) is None, pid
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:  # a live process; signal 0 must only ask about it, never signal it
            (out / MARKER).write_text(json.dumps(marker | {"pid": alive.pid}))
            assert runs._holder(out) == f"process {alive.pid} (numpylm train)"
            with pytest.raises(subprocess.TimeoutExpired):  # not signalled: still running
                alive.wait(timeout=0.3)
        finally:
            alive.kill()
            alive.wait()
        (out / MARKER).unlink()
        assert runs._holder(out) is None
    finally:
        os.close(fd)


def test_resuming_yields_the_checked_run(tmp_path: Path) -> None:
    save(tmp_path, 2)
    with open_run(tmp_path, resume=True) as run:
        assert run.step == 2 and run.losses == [3.5, 3.25]
    assert runs.saved_args(tmp_path, "train") == {"steps": 12, "lr": 0.01}


def test_resuming_on_other_data_or_dtype_or_kind_is_refused(tmp_path: Path) -> None:
    save(tmp_path, 2)
    with pytest.raises(ValueError, match=r"other\.txt is not the text this run was trained on"):
        with open_run(tmp_path, resume=True, data="other.txt", data_sha256="0" * 64):
            pass
    with pytest.raises(ValueError, match="trained in float32; cannot resume in float64"):
        with open_run(tmp_path, resume=True, dtype="float64"):
            pass
    with pytest.raises(
        CheckpointError,
        match="not a fine-tuning run but a training run: resume it with numpylm train",
    ):
        with open_run(tmp_path, "finetune", resume=True):
            pass


def test_the_holder_is_asked_about_with_signal_0_even_as_process_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a container numpylm may itself be process 1; the check sends no real signal."""
    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: asked.append((pid, sig)))
    marker = {"format": "numpylm-trainer-state-1", "kind": "finetune", "pid": 1}
    (tmp_path / MARKER).write_text(json.dumps(marker))
    assert runs._holder(tmp_path) == "process 1 (numpylm finetune)"
    assert asked == [(1, 0)]


def test_saved_args_of_a_finetuning_run(tmp_path: Path) -> None:
    save(tmp_path, 1, kind="finetune")
    with pytest.raises(CheckpointError, match="resume it with numpylm finetune"):
        runs.saved_args(tmp_path, "train")
    with pytest.raises(ValueError, match=r"f\.txt is not the data this run was fine-tuned on"):
        with open_run(tmp_path, "finetune", resume=True, data_sha256="0" * 64):
            pass
    state = read_state(tmp_path)
    (tmp_path / STATE).write_text(json.dumps(state | {"args": None}))
    with pytest.raises(CheckpointError, match=r"has no training arguments \('args'\)"):
        runs.saved_args(tmp_path, "finetune")


def test_saved_args_reads_a_committed_save_and_repairs_nothing(tmp_path: Path) -> None:
    """Readers never repair (the run's holder may be moving the save into place): the
    committed state is read from ``.commit``, in preference to the older one beside it, and
    not a file moves. Only a run's ``open_run`` rolls the save forward."""
    save(tmp_path, 1)
    (tmp_path / runs.COMMIT).mkdir()
    committed = read_state(tmp_path) | {"step": 2, "args": {"steps": 99}}
    (tmp_path / runs.COMMIT / STATE).write_text(json.dumps(committed))
    before = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*.json")}
    assert runs.saved_args(tmp_path, "train") == {"steps": 99}
    assert runs.last_saved(tmp_path) == f"{tmp_path} keeps its last checkpoint, step 2"
    with pytest.raises(CheckpointError) as refused:
        runs.load_checkpoint(tmp_path)
    assert str(refused.value) == (
        f"a checkpoint is being moved into place in {tmp_path} (.commit is there): wait for the "
        "run to finish it, or, if it was stopped, resume it (which finishes the move first)"
    )
    after = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*.json")}
    assert after == before
    os.replace(tmp_path / runs.COMMIT / STATE, tmp_path / STATE)  # the move, finished by hand
    assert runs.saved_args(tmp_path, "train") == {"steps": 99}  # an empty .commit is left
    (tmp_path / runs.COMMIT).rmdir()
    assert runs.saved_args(tmp_path, "train") == {"steps": 99}


def test_nothing_to_resume(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as refused:
        runs.saved_args(tmp_path, "finetune")
    assert str(refused.value) == (
        f"{tmp_path} has no trainer_state.json: there is no fine-tuning run to resume there "
        "(leave out --resume to start one)"
    )
    with pytest.raises(CheckpointError) as refused:
        runs.load_checkpoint(tmp_path)
    assert str(refused.value) == (
        f"{tmp_path} has no trainer_state.json: there is no training run to resume there "
        "(leave out --resume to start one)"
    )


def test_a_run_saved_before_kinds_were_recorded_is_a_training_run(tmp_path: Path) -> None:
    save(tmp_path, 1)
    state = read_state(tmp_path)
    del state["kind"]
    (tmp_path / STATE).write_text(json.dumps(state))
    assert runs.saved_args(tmp_path, "train") == {"steps": 12, "lr": 0.01}
    with pytest.raises(CheckpointError, match="is not a fine-tuning run but a training run"):
        runs.saved_args(tmp_path, "finetune")
    # a kind numpylm does not know is not numpylm's state; the message says why (it used to
    # say "format 'numpylm-trainer-state-1', expected 'numpylm-trainer-state-1'")
    (tmp_path / STATE).write_text(json.dumps(state | {"kind": "dpo"}))
    with pytest.raises(CheckpointError) as refused:
        runs.saved_args(tmp_path, "train")
    assert str(refused.value) == (
        f"{tmp_path / STATE} is not a numpylm trainer state (kind 'dpo', expected 'train' or "
        "'finetune')"
    )
    (tmp_path / STATE).write_text(json.dumps(state | {"step": 1.0}))
    with pytest.raises(CheckpointError) as refused:
        runs.saved_args(tmp_path, "train")
    assert str(refused.value) == (
        f"{tmp_path / STATE} is not a numpylm trainer state (it lacks the step or its files' "
        "sha256)"
    )


def test_a_float64_run_resumes_in_float64(tmp_path: Path) -> None:
    model = GPT(GPTConfig(vocab_size=259, n_ctx=8, n_layer=1, n_head=2, n_embd=8), 0, np.float64)
    optimizer = AdamW(model.params, lr=1e-2)
    state = trainer_state(1) | {"dtype": "float64"}
    runs.save_checkpoint(tmp_path, model, byte_tokenizer(), optimizer, state)
    run = runs.load_checkpoint(tmp_path)
    assert {p.dtype for p in run.model.params.values()} == {np.dtype(np.float64)}
    for name, p in model.params.items():
        np.testing.assert_array_equal(run.model.params[name], p)


def refusal(out: Path, kind: str = "train", **kw: Any) -> str:
    """The message ``open_run`` refuses ``out`` with; nothing in ``out`` may change."""
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError) as refused:
        with open_run(out, kind, **kw):
            pass
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    return str(refused.value)


def test_a_directory_holding_a_checkpoint_is_refused_and_kept(tmp_path: Path) -> None:
    save(tmp_path, 3)
    assert refusal(tmp_path) == (
        f"{tmp_path} already holds a training run (step 3): pass --resume to continue it, "
        "or choose another --out, or pass --overwrite to delete it and start again"
    )
    (tmp_path / "README.md").write_text("notes")
    assert refusal(tmp_path) == (
        f"{tmp_path} already holds a training run (step 3): pass --resume to continue it, "
        "or choose another --out; it also holds files numpylm did not write (README.md), so "
        "--overwrite would refuse it"
    )
    assert refusal(tmp_path, overwrite=True) == (
        f"--overwrite deletes only what numpylm wrote, and {tmp_path} holds files it did not "
        "write: README.md. Nothing was deleted: move those away, or choose another --out"
    )


def test_a_save_committed_before_any_checkpoint_is_a_run(tmp_path: Path) -> None:
    """The first save crashed after its commit point: the directory holds the marker and a
    ``.commit`` with the whole checkpoint. It is a run with that step, and resuming rolls the
    save forward."""
    save(tmp_path / "saved", 1)
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"format": "numpylm-trainer-state-1", "kind": "train"}))
    os.replace(tmp_path / "saved", out / runs.COMMIT)
    assert refusal(out).startswith(f"{out} already holds a training run (step 1): ")
    assert runs.survey(out).foreign == []
    with open_run(out, resume=True) as run:
        assert run.step == 1
    assert sorted(os.listdir(out)) == sorted([MARKER, *read_state(out)["files"], STATE])

    # an empty .commit without a marker is not a run: numpylm writes its marker first
    (tmp_path / "empty" / runs.COMMIT).mkdir(parents=True)
    assert refusal(tmp_path / "empty").startswith(
        f"{tmp_path / 'empty'} is not empty (.commit) and is not a numpylm run: "
    )


@pytest.mark.parametrize(
    ("started", "refused"),
    [
        (
            {"kind": "finetune", "format": "numpylm-trainer-state-1", "pid": 1},
            "{out} holds a fine-tuning run that was stopped before its first checkpoint: "
            "choose another --out, or pass --overwrite to delete it and start again",
        ),
        (  # an unknown kind, or another format: not numpylm's marker
            {"kind": "other", "format": "numpylm-trainer-state-1"},
            "{out} is not empty (.numpylm-run) and is not a numpylm run: nothing in it is "
            "changed, and --overwrite would not delete it either. Choose another --out (a new "
            "or empty directory)",
        ),
        (
            {"kind": "finetune", "format": "x"},
            "{out} is not empty (.numpylm-run) and is not a numpylm run: nothing in it is "
            "changed, and --overwrite would not delete it either. Choose another --out (a new "
            "or empty directory)",
        ),
    ],
)
def test_a_run_of_another_kind_stopped_early_is_refused(
    tmp_path: Path, started: dict[str, Any], refused: str
) -> None:
    (tmp_path / MARKER).write_text(json.dumps(started))
    assert refusal(tmp_path) == refused.format(out=tmp_path)
    if started["format"] == "x":
        return
    if started["kind"] == "finetune":  # a run of the same kind starts again in it
        with open_run(tmp_path, "finetune"):
            pass
        with open_run(tmp_path, overwrite=True):  # --overwrite deletes it
            assert json.loads((tmp_path / MARKER).read_text())["kind"] == "train"
    else:
        assert refusal(tmp_path, overwrite=True).startswith("--overwrite deletes only what ")


@pytest.mark.parametrize(
    ("n", "listed"), [(5, "n0, n1, n2, n3, n4"), (6, "n0, n1, n2, n3, n4 and 1 more")]
)
def test_a_user_folder_is_refused_naming_at_most_five_files(
    tmp_path: Path, n: int, listed: str
) -> None:
    for i in range(n):
        (tmp_path / f"n{i}").write_text("mine")
    assert refusal(tmp_path) == (
        f"{tmp_path} is not empty ({listed}) and is not a numpylm run: nothing in it is "
        "changed, and --overwrite would not delete it either. Choose another --out (a new or "
        "empty directory)"
    )


def test_a_user_folder_is_refused_with_its_files_listed(tmp_path: Path) -> None:
    names = [f"notes{i}.txt" for i in range(7)]
    for name in names:
        (tmp_path / name).write_text("mine")
    with pytest.raises(
        CheckpointError,
        match=r"is not empty \(notes0\.txt, notes1\.txt, notes2"
        r"\.txt, notes3\.txt, notes4\.txt and 2 more\) and is not a numpylm run",
    ):
        with open_run(tmp_path):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_a_file_is_not_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine")
    with pytest.raises(CheckpointError, match="is a file, not a directory"):
        with open_run(tmp_path / "f"):
            pass
    assert (tmp_path / "f").read_text() == "mine"


def test_overwrite_replaces_a_run_with_a_fresh_one(tmp_path: Path) -> None:
    save(tmp_path, 3, kind="finetune")
    (tmp_path / runs.INCOMING).mkdir()
    with open_run(tmp_path, overwrite=True):
        assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER]
        assert json.loads((tmp_path / MARKER).read_text())["kind"] == "train"


def test_out_may_not_be_or_hold_what_the_run_reads(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "data.txt").write_text("text")
    for out in (base, tmp_path):
        with pytest.raises(CheckpointError) as refused:
            with open_run(out, reads=[None, "gpt2", base / "data.txt"]):
                pass
        assert str(refused.value) == (
            f"--out {out} is where the run reads {base / 'data.txt'} from: writing there would "
            "destroy what is being read. Choose another --out"
        )
    with open_run(tmp_path / "other", reads=[None, "gpt2", base / "data.txt"]):
        pass


# ------------------------------------------------------------------------------------------------
# Ctrl-C and digests


def test_the_first_ctrl_c_is_a_request_and_the_second_stops() -> None:
    # Python's own handler, as in a terminal (a background job starts with SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with runs.deferred_sigint() as interrupted:
            assert not interrupted()
            os.kill(os.getpid(), signal.SIGINT)
            assert interrupted()
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)


def test_an_ignored_ctrl_c_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with runs.deferred_sigint() as interrupted:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert not interrupted()
    finally:
        signal.signal(signal.SIGINT, before)


def test_digests_match_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "big"
    raw = np.random.default_rng(0).bytes((1 << 20) + 123)  # more than one read block
    path.write_bytes(raw)
    assert runs.sha256_file(path) == hashlib.sha256(raw).hexdigest()
    assert runs.sha256_text("héllo") == hashlib.sha256("héllo".encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# Whose directory is it? ``survey``, entry by entry

CACHE = "corpus.0123456789abcdef.train.npy"  # data.load_text_data's name for a token cache


def full_run(out: Path) -> Path:
    """A training run holding one of every entry numpylm writes, each as numpylm writes it."""
    save(out, 2)
    marker = {"format": "numpylm-trainer-state-1", "kind": "train", "pid": 1}
    (out / MARKER).write_text(json.dumps(marker))
    (out / "data").mkdir()
    np.save(out / "data" / CACHE, np.arange(5, dtype=np.uint16))
    np.save(out / "data" / CACHE.replace("train", "val"), np.arange(5, dtype=np.uint32))
    (out / "data" / f".{CACHE}.k2_x9.tmp").write_bytes(b"half")  # a cache being written
    (out / "eval_results.json").write_text(json.dumps({"step": 2, "val_loss": 3.5}))
    (out / "prompt_template.json").write_text(json.dumps({"template": "Q: {prompt}"}))
    (out / ".lock").write_text("")  # numpylm 0.1's lock
    (out / runs.INCOMING).mkdir()  # a save that a crash cut short
    (out / runs.INCOMING / "model.safetensors").write_bytes(b"half")
    (out / runs.INCOMING / ".optimizer.safetensors.ab_12.tmp").write_bytes(b"half")
    (out / ".config.json.ab_12.tmp").write_bytes(b"half")  # a write a crash cut short
    return out


def sorted_survey(out: Path, verify: bool = False) -> tuple[Any, Any, list[str], list[str]]:
    found = runs.survey(out, verify=verify)
    step = None if found.state is None else found.state["step"]
    return found.kind, step, sorted(found.mine), sorted(found.foreign)


def test_survey_counts_every_entry_numpylm_wrote_as_its_own(tmp_path: Path) -> None:
    out = full_run(tmp_path / "run")
    names = sorted(os.listdir(out))
    assert sorted_survey(out) == ("train", 2, names, [])
    assert sorted_survey(out, verify=True) == ("train", 2, names, [])


def damage_run(out: Path, how: str) -> None:
    """Change one entry of ``full_run`` into something numpylm did not write."""
    data = out / "data"
    if how == "README.md":
        (out / "README.md").write_text("notes")
    elif how == "data (a symbolic link)":
        shutil.rmtree(data)
        data.symlink_to(out / runs.INCOMING)
    elif how == "data: a file":
        shutil.rmtree(data)
        data.write_text("mine")
    elif how == "data: notes":
        (data / "notes.txt").write_text("mine")
    elif how == "data: a folder":
        (data / CACHE.replace("corpus", "sub")).mkdir()
    elif how == "data: 2-D ids":
        np.save(data / CACHE, np.zeros((2, 2), np.uint16))
    elif how == "data: int64 ids":
        np.save(data / CACHE, np.zeros(2, np.int64))
    elif how == "data: not npy":
        (data / CACHE).write_bytes(b"not an array")
    elif how == "data: a short name":
        np.save(data / "corpus.0123456789abcde.train.npy", np.arange(3, dtype=np.uint16))
    elif how == "data: a temporary of another file":
        (data / ".notes.txt.ab_12.tmp").write_bytes(b"x")
    elif how == "eval_results: no step":
        (out / "eval_results.json").write_text(json.dumps({"val_loss": 3.5}))
    elif how == "eval_results: a text":
        (out / "eval_results.json").write_text(json.dumps({"step": 2, "note": "mine"}))
    elif how == "eval_results: a bool":
        (out / "eval_results.json").write_text(json.dumps({"step": 2, "done": True}))
    elif how == "template: a number":
        (out / "prompt_template.json").write_text(json.dumps({"template": 3}))
    elif how == "template: more keys":
        (out / "prompt_template.json").write_text(json.dumps({"template": "x", "mine": "y"}))
    elif how == "a user's .lock":
        (out / ".lock").write_text("my lock\n")
    elif how == "a long .lock":
        (out / ".lock").write_text(f"numpylm {'t' * 84} (pid 1)\n")  # 101 bytes
    elif how == "a user's marker":
        (out / MARKER).write_text("hello")
    elif how == "a user's trainer_state":
        (out / STATE).write_text(json.dumps({"global_step": 2}))
    elif how == "a .commit of the user's":
        (out / runs.COMMIT).mkdir()
        (out / runs.COMMIT / "thesis.tex").write_text("chapter 1")
    elif how == "a .commit file":
        (out / runs.COMMIT).write_text("mine")
    elif how == "a .commit without its state":
        (out / runs.COMMIT).mkdir()
        (out / runs.COMMIT / "model.safetensors").write_bytes(b"w")
    elif how == "a .commit with a file its state does not list":
        (out / runs.COMMIT).mkdir()
        state = read_state(out)
        state["files"] = {"config.json": state["files"]["config.json"]}
        (out / runs.COMMIT / STATE).write_text(json.dumps(state))
        (out / runs.COMMIT / "model.safetensors").write_bytes(b"w")
    elif how == "a .commit holding a folder":
        (out / runs.COMMIT).mkdir()
        (out / runs.COMMIT / "model.safetensors").mkdir()
        (out / runs.COMMIT / STATE).write_text(json.dumps(read_state(out)))
    elif how == "a folder in .incoming":
        (out / runs.INCOMING / "vocab.json").mkdir()
    elif how == "a .incoming of the user's":
        (out / runs.INCOMING / "thesis.tex").write_text("chapter 1")
    elif how == "a checkpoint file that is a folder":
        (out / "merges.txt").unlink()
        (out / "merges.txt").mkdir()
    elif how == "a temporary of the user's":
        (out / ".thesis.tex.ab_12.tmp").write_text("mine")
    elif how == "a temporary in capitals":
        (out / ".config.json.AB12.tmp").write_text("mine")
    elif how == "a temporary that is a folder":
        (out / ".config.json.ab12.tmp").mkdir()
    else:
        raise AssertionError(how)


FOREIGN_ENTRIES = {
    "README.md": ["README.md"],
    "data (a symbolic link)": ["data (a symbolic link)"],
    **{
        how: ["data"]
        for how in (
            "data: a file",
            "data: notes",
            "data: a folder",
            "data: 2-D ids",
            "data: int64 ids",
            "data: not npy",
            "data: a short name",
            "data: a temporary of another file",
        )
    },
    **{
        how: ["eval_results.json"]
        for how in ("eval_results: no step", "eval_results: a text", "eval_results: a bool")
    },
    "template: a number": ["prompt_template.json"],
    "template: more keys": ["prompt_template.json"],
    "a user's .lock": [".lock"],
    "a long .lock": [".lock"],
    "a user's marker": [MARKER],
    "a .commit of the user's": [".commit"],
    "a .commit file": [".commit"],
    "a .commit without its state": [".commit"],
    "a .commit with a file its state does not list": [".commit"],
    "a .commit holding a folder": [".commit"],
    "a folder in .incoming": [".incoming"],
    "a .incoming of the user's": [".incoming"],
    "a checkpoint file that is a folder": ["merges.txt"],
    "a temporary of the user's": [".thesis.tex.ab_12.tmp"],
    "a temporary in capitals": [".config.json.AB12.tmp"],
    "a temporary that is a folder": [".config.json.ab12.tmp"],
}


@pytest.mark.parametrize(("how", "foreign"), FOREIGN_ENTRIES.items(), ids=FOREIGN_ENTRIES.keys())
def test_survey_names_each_entry_numpylm_did_not_write(
    tmp_path: Path, how: str, foreign: list[str]
) -> None:
    out = full_run(tmp_path / "run")
    damage_run(out, how)
    kind, step, mine, found = sorted_survey(out)
    assert (kind, step, found) == ("train", 2, foreign)
    assert sorted(mine + [f.split(" (")[0] for f in found]) == sorted(os.listdir(out))


def test_an_empty_commit_is_a_save_whose_files_were_all_moved(tmp_path: Path) -> None:
    out = full_run(tmp_path / "run")
    (out / runs.COMMIT).mkdir()
    assert sorted_survey(out) == ("train", 2, sorted(os.listdir(out)), [])
    assert not runs._holds_only(tmp_path / "missing", bool)  # nothing there: not a folder


def test_a_trainer_state_not_numpylms_leaves_the_checkpoint_unlisted(tmp_path: Path) -> None:
    out = full_run(tmp_path / "run")
    files = sorted(read_state(out)["files"])
    damage_run(out, "a user's trainer_state")
    kind, step, _, foreign = sorted_survey(out)
    assert (kind, step) == ("train", None)  # the marker still says what the run is
    assert foreign == sorted([STATE, *files])


def test_a_marker_alone_makes_a_run_and_its_kind(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    marker = {"format": "numpylm-trainer-state-1", "kind": "finetune"}
    (out / MARKER).write_text(json.dumps(marker))
    (out / "model.safetensors").write_bytes(b"w")  # listed by no trainer state
    assert sorted_survey(out) == ("finetune", None, [MARKER], ["model.safetensors"])


def test_the_kind_comes_from_the_state_and_defaults_to_training(tmp_path: Path) -> None:
    out = tmp_path / "run"
    save(out, 1, kind="finetune")
    assert runs.survey(out).kind == "finetune"
    state = read_state(out)
    del state["kind"]
    (out / STATE).write_text(json.dumps(state))
    assert runs.survey(out).kind == "train"


def test_verify_names_a_checkpoint_file_changed_since_it_was_saved(tmp_path: Path) -> None:
    out = full_run(tmp_path / "run")
    with open(out / "vocab.json", "a") as f:
        f.write(" ")
    assert sorted_survey(out)[3] == []  # listed, and not checked without verify
    assert runs.survey(out).foreign == []  # which is the default
    assert sorted_survey(out, verify=True)[3] == ["vocab.json (changed since numpylm saved it)"]


@pytest.mark.parametrize(
    ("files", "is_state"),
    [
        ({"model.safetensors": "0" * 64}, True),
        ({"thesis.tex": "0" * 64}, False),
        ({"model.safetensors": [0] * 64}, False),
        ({"model.safetensors": "0" * 63}, False),
    ],
)
def test_a_state_lists_checkpoint_files_with_their_digests(
    files: dict[str, Any], is_state: bool
) -> None:
    state = {"format": "numpylm-trainer-state-1", "kind": "train", "step": 1, "files": files}
    assert runs._is_state(state) is is_state


def test_an_old_lock_is_short_and_names_a_numpylm_process(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    for text, old in [
        ("", True),
        ("numpylm train (pid 12)\n", True),
        (f"numpylm {'t' * 83} (pid 1)\n", True),  # 100 bytes: the longest
        (f"numpylm {'t' * 84} (pid 1)\n", False),
        ("NUMPYLM train (PID 12)\n", False),
        ("numpylm train (pid 12)", False),
    ]:
        path.write_text(text)
        assert runs._is_old_lock(path) is old, text
    path.unlink()
    path.mkdir()
    assert not runs._is_old_lock(path)


def test_survey_of_what_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError) as refused:
        runs.survey(tmp_path / "f")
    assert str(refused.value) == f"cannot read --out {tmp_path / 'f'}: Not a directory"


# ------------------------------------------------------------------------------------------------
# Opening a run: what --out can be, what resuming refuses, a file that cannot be written


def test_what_out_cannot_be_is_named(tmp_path: Path) -> None:
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(CheckpointError) as refused:
        with open_run(dangling):
            pass
    assert str(refused.value) == (
        f"--out {dangling} is a symbolic link to {tmp_path / 'nowhere'}, which does not exist: "
        "create that directory, or choose another --out"
    )
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CheckpointError) as refused:
        with open_run(tmp_path / "fifo"):
            pass
    assert (
        str(refused.value) == f"--out {tmp_path / 'fifo'} is not a directory: choose another --out"
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError) as refused:
        with open_run(tmp_path / "file" / "run"):
            pass
    assert str(refused.value) == f"cannot create --out {tmp_path / 'file' / 'run'}: Not a directory"
    with pytest.raises(CheckpointError) as refused:
        with open_run(tmp_path / "new", "finetune", resume=True):
            pass
    assert str(refused.value) == (
        f"{tmp_path / 'new'} does not exist: there is no fine-tuning run to resume there (leave "
        "out --resume to start one)"
    )
    assert not (tmp_path / "new").exists()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with open_run(tmp_path / "link"):  # a link to a directory: the user's choice, used
        pass
    assert os.listdir(tmp_path / "real") == [MARKER]


def test_resuming_refuses_what_is_not_a_run_with_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert refusal(out, resume=True) == (
        f"{out} holds no numpylm run: there is no training run to resume there (leave out "
        "--resume to start one)"
    )
    (out / "notes.txt").unlink()
    marker = {"format": "numpylm-trainer-state-1", "kind": "finetune"}
    (out / MARKER).write_text(json.dumps(marker))
    assert refusal(out, "finetune", resume=True) == (
        f"{out} has no trainer_state.json: the fine-tuning run there was stopped before its "
        "first checkpoint, so there is nothing to resume. Start it again without --resume"
    )
    (out / STATE).write_text(json.dumps({"format": "other"}))  # says what is wrong with it
    assert refusal(out, "finetune", resume=True) == (
        f"{out / STATE} is not a numpylm trainer state (format 'other', expected "
        "'numpylm-trainer-state-1')"
    )


def test_resuming_refuses_a_users_file_where_the_run_writes(tmp_path: Path) -> None:
    out = full_run(tmp_path / "run")
    (out / "README.md").write_text("notes")  # harmless: resuming leaves it alone
    (out / "data old").write_text("notes")  # named like a run's entry, but not one
    with open_run(out, resume=True) as run:
        assert run.step == 2
    assert (out / "README.md").read_text() == "notes"
    damage_run(out, "data (a symbolic link)")
    damage_run(out, "a user's .lock")  # runs no longer write a .lock: it is left alone
    assert refusal(out, resume=True) == (
        f"{out} holds files numpylm did not write where the run writes: data (a symbolic "
        "link). Nothing was changed: move them away, then resume"
    )
    # a committed save read while the trainer_state.json beside it is not numpylm's
    out = full_run(tmp_path / "committed")
    (out / runs.COMMIT).mkdir()
    os.replace(out / STATE, out / runs.COMMIT / STATE)
    (out / STATE).write_text(json.dumps({"global_step": 2}))
    assert refusal(out, resume=True) == (
        f"{out} holds files numpylm did not write where the run writes: trainer_state.json. "
        "Nothing was changed: move them away, then resume"
    )


def test_a_marker_beside_files_of_the_users_is_refused(tmp_path: Path) -> None:
    marker = {"format": "numpylm-trainer-state-1", "kind": "train"}
    (tmp_path / MARKER).write_text(json.dumps(marker))
    (tmp_path / "README.md").write_text("notes")
    assert refusal(tmp_path) == (
        f"{tmp_path} holds files numpylm did not write (README.md) beside a training run's "
        "marker: nothing in it is changed, and --overwrite would not delete it either. Choose "
        "another --out (a new or empty directory)"
    )


@pytest.mark.parametrize(
    ("code", "saved", "ends"),
    [
        (errno.ENOSPC, True, "step 2: free some space, then continue with --resume"),
        (errno.EDQUOT, True, "step 2: free some space, then continue with --resume"),
        (errno.EIO, False, "no checkpoint had been saved yet: fix that, then start the run again"),
    ],
)
def test_a_file_of_the_run_that_cannot_be_written_is_named(
    tmp_path: Path, code: int, saved: bool, ends: str
) -> None:
    out = tmp_path / "run"
    if saved:
        save(out, 2)
    failed = out / runs.INCOMING / "model.safetensors"
    with pytest.raises(CheckpointError) as refused:
        with open_run(out, resume=saved):
            if saved:
                failed.parent.mkdir()
                failed.write_bytes(b"half")
            raise OSError(code, os.strerror(code), str(failed))
    assert str(refused.value) == (
        f"could not write {failed} ({os.strerror(code)}); "
        + (f"{out} keeps its last checkpoint, " if saved else "")
        + ends
    )
    assert not failed.parent.exists()  # the half-written save: deleted


def test_an_error_about_another_path_is_not_the_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for error in (
        OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "elsewhere")),
        OSError(errno.ENOSPC, "No space left on device"),
    ):
        with pytest.raises(OSError) as raised:
            with open_run(out):
                raise error
        assert raised.value is error


# ------------------------------------------------------------------------------------------------
# A run outlives its output


class Failing:
    """A stream whose writes fail with ``error`` once ``fail`` is set."""

    encoding = "utf-8"

    def __init__(self, error: Exception, closed: bool = False) -> None:
        self.error, self.closed, self.fail, self.text = error, closed, False, []

    def write(self, text: str) -> int:
        if self.fail:
            raise self.error
        self.text.append(text)
        return len(text)

    def flush(self) -> None:
        self.write("")


def test_output_that_fails_is_dropped_and_the_streams_are_put_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, err = Failing(BrokenPipeError(32, "Broken pipe")), Failing(ValueError("closed"), True)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with runs.outlive_output():
        assert isinstance(sys.stdout, runs._Forgiving) and sys.stdout.stream is out
        assert sys.stdout.encoding == "utf-8"  # the real stream's attributes
        assert print("step 1") is None and out.text == ["step 1", "", "\n", ""]
        sys.stderr.flush()
        assert err.text == ["", ""]
        inner = sys.stdout
        with runs.outlive_output():  # nested: the outer stand-ins stay
            assert sys.stdout is inner
        assert sys.stdout is inner
        out.fail = err.fail = True
        assert sys.stdout.write("lost") == 4 and sys.stderr.write("lost too") == 8
        out.fail = err.fail = False
        print("after")  # dropped from then on, even though the stream works again
        print("after", file=sys.stderr)
        assert out.text == ["step 1", "", "\n", ""] and err.text == ["", ""]
    assert sys.stdout is out and sys.stderr is err


def test_a_bug_in_the_output_is_not_swallowed() -> None:
    forgiving = runs._Forgiving(Failing(ValueError("a real bug")))
    forgiving.stream.fail = True  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="a real bug"):
        forgiving.write("x")
    closed = runs._Forgiving(None)  # started with the stream closed (`2>&-`)
    assert closed.lost and closed.write("x") == 1
    assert not runs._Forgiving(Failing(ValueError("x"))).lost
