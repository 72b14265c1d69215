"""The run directory's bookkeeping, tested through runs.py's own functions on a tiny model: the
save journal (which file arrives when), resuming, the lock, what a new run refuses, Ctrl-C.

These tests were written for the survivors of a mutation run over ``runs.py``
(docs/reliability.md, "Mutation testing"); each asserts something a one-line bug there changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
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
        (out / MARKER).write_text(json.dumps(marker | {"pid": 1}))  # init: alive
        assert runs._holder(out) == "process 1 (numpylm train)"
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
    with pytest.raises(CheckpointError, match=r"being moved into place .*\(\.commit is there\)"):
        runs.load_checkpoint(tmp_path)
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
