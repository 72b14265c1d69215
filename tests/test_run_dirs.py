"""Run directories under hostile use: numpylm writes into, and deletes from, only what it can
show it wrote; nothing in a run is touched before its lock is held; a run outlives its output;
and the messages about a run name the real cause (see docs/reliability.md, "Run directories").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tinyrun import tiny_config

from numpylm import GPT, CheckpointError
from numpylm.cli import main
from numpylm.training import runs
from numpylm.training.train import TRAINER_STATE, TrainConfig, resume_config, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--tokenizer", "bpe:300", "--config", "tiny", "--n-embd", "32", "--n-ctx", "32"]
TINY += ["--batch-size", "4", "--eval-batches", "1"]
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="flock, pipes and rlimits are POSIX")


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: a file's bytes, a link's target (links not followed)."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = "dir"
    return found


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture(scope="module")
def finished(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step run, to copy."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(corpus, out, steps=4), progress=False)
    return out


# --------------------------------------------------------------------------------------------
# 1. A directory is numpylm's by what numpylm wrote in it, never by a name


FOREIGN = {
    "a user's .lock": {".lock": "my lock\n"},
    "an empty .lock": {".lock": ""},
    "a marker of someone else's": {".numpylm-run": "hello"},
    "a marker of an unknown kind": {".numpylm-run": '{"format": "numpylm-trainer-state-1"}'},
    "transformers' trainer_state.json": {
        "trainer_state.json": '{"global_step": 10, "log_history": []}',
        "model.safetensors": "weights",
    },
    "a .incoming of the user's": {".incoming/thesis.tex": "chapter 1"},
}


@pytest.mark.parametrize("files", FOREIGN.values(), ids=FOREIGN.keys())
def test_a_folder_numpylm_did_not_write_is_never_touched(
    files: dict[str, str], corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = snapshot(out)
    for overwrite in (False, True):
        with pytest.raises(CheckpointError, match=r"not a numpylm run|deletes only what numpylm"):
            train(tiny_config(corpus, out), progress=False, overwrite=overwrite)
        with pytest.raises(CheckpointError):
            train(tiny_config(corpus, out), resume=True, progress=False)
    argv = ["train", "--data", str(corpus), "--out", str(out), "--overwrite", *TINY]
    assert main(argv) == 1
    assert sorted(files)[0].split("/")[0] in last_error(capsys)  # names what it did not write
    assert snapshot(out) == before  # not a byte changed, no lock or marker left behind


def test_a_copied_run_with_files_removed_is_not_a_run_to_reuse(
    finished: Path, corpus: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    (copy / TRAINER_STATE).unlink()
    (copy / runs.OPTIMIZER_FILE).unlink()
    (copy / "README.md").write_text("my notes")
    before = snapshot(copy)
    with pytest.raises(CheckpointError, match=r"did not write \(README.md, config.json"):
        train(tiny_config(corpus, copy), progress=False)
    with pytest.raises(
        CheckpointError, match=r"deletes only what numpylm wrote.*model.safetensors"
    ):
        train(tiny_config(corpus, copy), progress=False, overwrite=True)
    assert snapshot(copy) == before


def test_overwrite_deletes_a_run_but_not_a_file_added_to_it_nor_a_changed_one(
    finished: Path, corpus: Path, tmp_path: Path
) -> None:
    added = tmp_path / "added"
    shutil.copytree(finished, added)
    (added / "README.md").write_text("notes")
    with pytest.raises(CheckpointError, match=r"already holds a training run \(step 4\).*README"):
        train(tiny_config(corpus, added), progress=False)
    with pytest.raises(CheckpointError, match=r"did not write: README\.md"):
        train(tiny_config(corpus, added), progress=False, overwrite=True)
    # resuming leaves the user's file alone
    assert train(tiny_config(corpus, added, steps=6), resume=True, progress=False).step == 6
    assert (added / "README.md").read_text() == "notes"

    changed = tmp_path / "changed"
    shutil.copytree(finished, changed)
    with open(changed / "vocab.json", "a") as f:
        f.write(" ")
    with pytest.raises(CheckpointError, match=r"vocab.json \(changed since numpylm saved it\)"):
        train(tiny_config(corpus, changed), progress=False, overwrite=True)
    assert (changed / TRAINER_STATE).is_file()


@POSIX
def test_links_inside_a_run_are_never_followed_nor_deleted(
    finished: Path, corpus: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "a.txt").write_text("keep me")
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "data")
    (out / "data").symlink_to(precious)
    with pytest.raises(CheckpointError, match=r"data \(a symbolic link\)"):
        train(tiny_config(corpus, out), progress=False, overwrite=True)
    with pytest.raises(CheckpointError, match=r"where the run writes: data \(a symbolic link\)"):
        train(tiny_config(corpus, out, steps=6), resume=True, progress=False)
    assert snapshot(precious) == {"a.txt": b"keep me"}


def test_empty_paths_are_refused_everywhere(
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thesis.tex").write_text("years of work")
    data = ["--data", str(corpus)]
    for argv in (
        ["train", *data, "--out", "", "--overwrite"],
        ["train", "--data", "", "--out", "run"],
        ["train", *data, "--out", "run", "--tokenizer", ""],
        ["finetune", *data, "--out", ""],
        ["finetune", *data, "--out", "run", "--model", ""],
        ["generate", "hi", "--model", ""],
        ["chat", "--model", ""],
        ["eval", "--data", ""],
        ["eval-sft", "--data", ""],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        err = last_error(capsys)
        assert "empty (an unset shell variable?)" in err or "got ''" in err, argv
    with pytest.raises(ValueError, match="out is empty"):
        TrainConfig(data=str(corpus), out="")
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]


def test_out_that_cannot_be_a_directory_is_named(corpus: Path, tmp_path: Path) -> None:
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"symbolic link to .*nowhere, which does not exist"):
        train(tiny_config(corpus, dangling), progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a directory"):
        train(tiny_config(corpus, tmp_path / "file"), progress=False)
    # a link to a directory is the user's choice of --out, and is used
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert train(tiny_config(corpus, tmp_path / "link", steps=1), progress=False).step == 1
    assert (tmp_path / "real" / TRAINER_STATE).is_file()


# --------------------------------------------------------------------------------------------
# 2. Nothing in a run is touched before its lock is held; readers never repair


HOLD = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)  # what a training run holds, on the directory itself
marker = {"format": "numpylm-trainer-state-1", "kind": "train", "pid": os.getpid()}
open(os.path.join(sys.argv[1], ".numpylm-run"), "w").write(json.dumps(marker))
print("held", flush=True)
time.sleep(60)
"""


@POSIX
def test_nothing_is_repaired_while_another_process_holds_the_run(
    finished: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    # A save of step 4 committed but not yet moved into place, as the holder would leave it
    # for a moment: the committed state says step 9.
    (out / runs.COMMIT).mkdir()
    state = json.loads((out / TRAINER_STATE).read_text())
    committed = {**state, "step": 9, "args": {**state["args"], "steps": 99}}
    (out / runs.COMMIT / TRAINER_STATE).write_text(json.dumps(committed))
    shutil.copy(out / "model.safetensors", out / runs.COMMIT / "model.safetensors")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        before = snapshot(out)
        assert runs.last_saved(out).endswith("step 9")  # readers see the committed step ...
        assert resume_config(out).steps == 99
        with pytest.raises(CheckpointError, match="being moved into place"):
            runs.load_checkpoint(out)
        with pytest.raises(CheckpointError, match=f"in use by process {holder.pid}"):
            train(resume_config(out, steps=20), resume=True, progress=False)
        assert main(["train", "--out", str(out), "--resume"]) == 1
        assert f"in use by process {holder.pid} (numpylm train)" in last_error(capsys)
        GPT.from_pretrained(out)  # readers are never blocked
        assert snapshot(out) == before  # ... and nothing was moved, repaired or written
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def numpylm(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "numpylm", *args], cwd=ROOT, **kwargs)  # type: ignore[call-overload]


@POSIX
def test_a_second_process_is_refused_while_a_run_trains(
    finished: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "busy"
    shutil.copytree(finished, out)
    trainer = numpylm(
        "train", "--out", str(out), "--resume", "--steps", "30", "--save-every", "1",
        "--eval-every", "30", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    try:
        while runs.survey(out).kind and time.monotonic() < deadline:  # wait for it to hold out
            marker = json.loads((out / runs.RUN_MARKER).read_text())
            if marker["pid"] == trainer.pid:
                break
            time.sleep(0.05)
        refusals, resumed = 0, None
        while trainer.poll() is None and time.monotonic() < deadline:
            try:
                resumed = train(resume_config(out, steps=31), resume=True, progress=False)
            except CheckpointError as e:
                assert f"in use by process {trainer.pid} (numpylm train)" in str(e)
                refusals += 1
            else:  # allowed only once the trainer has finished and let go
                assert trainer.wait(timeout=60) == 0
        _, err = trainer.communicate(timeout=60)
    finally:
        trainer.kill()
    assert trainer.returncode == 0, err.decode()[-500:]
    assert refusals > 0
    # whole: every file matches its sha256 (31 if the last try came after the trainer ended)
    assert runs.load_checkpoint(out).step == (30 if resumed is None else 31)


# --------------------------------------------------------------------------------------------
# 5. A run outlives its output


@POSIX
def test_a_closed_output_does_not_stop_a_run(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    read, write = os.pipe()
    os.close(read)  # every write to the pipe fails with EPIPE, from the first
    try:
        argv = ["train", "--data", str(corpus), "--out", str(out), *TINY, "--steps", "6"]
        trainer = numpylm(*argv, "--eval-every", "1", stdout=write, stderr=write)
    finally:
        os.close(write)
    assert trainer.wait(timeout=120) == 141  # ended as a closed pipe ends numpylm ...
    assert runs.load_checkpoint(out).step == 6  # ... after training to the end and saving


@POSIX
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_finetune_piped_to_head_finishes(finished: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"say {i}", "response": str(i)}) + "\n" for i in range(20))
    )
    out = tmp_path / "ft"
    script = (
        f'"{sys.executable}" -m numpylm finetune --model {finished} --data {data} --out {out} '
        '--steps 8 --eval-every 1 --batch-size 4 | head -1; echo "status=${PIPESTATUS[0]}" >&2'
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.stdout.startswith("model: GPT(") and len(done.stdout.splitlines()) == 1
    assert done.stderr.strip().endswith("status=141") and "error" not in done.stderr
    assert runs.load_checkpoint(out).step == 8


# --------------------------------------------------------------------------------------------
# 7. Messages about a run name the real cause


def test_a_renamed_data_file_resumes(
    finished: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    state = json.loads((out / TRAINER_STATE).read_text())
    moved = tmp_path / "renamed.txt"
    shutil.copy(corpus, moved)
    state["args"]["data"] = str(tmp_path / "gone.txt")  # the file the run was started on ...
    (out / TRAINER_STATE).write_text(json.dumps(state))  # (sha256 of the state is not kept)
    assert main(["train", "--out", str(out), "--resume", "--steps", "6"]) == 1
    err = last_error(capsys)
    assert "gone.txt" in err and "--data NEWPATH" in err  # ... is gone, and the advice ...
    caches = sorted(p.name for p in (out / "data").iterdir())
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--data", str(moved)]) == 0
    assert json.loads((out / TRAINER_STATE).read_text())["step"] == 6  # ... works
    assert sorted(p.name for p in (out / "data").iterdir()) == caches  # the same ids, reused


def test_ctrl_c_before_the_first_checkpoint_claims_none(
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from numpylm.training import train as train_module

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the tokenizer is learned, before any save

    monkeypatch.setattr(train_module, "make_tokenizer", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--out", str(out), *TINY]) == 130
    assert last_error(capsys) == "numpylm: stopped at once; no checkpoint had been saved yet"


@POSIX
def test_a_full_disk_names_the_file_and_the_step_kept(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    limit = (out / "model.safetensors").stat().st_size + 1000  # smaller than the optimiser's
    script = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "from numpylm.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "train", "--out", str(out), "--resume", "--steps", "8"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    err = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "could not write" in err and "optimizer.safetensors (File too large)" in err
    assert f"{out} keeps its last checkpoint, step 4" in err and "--resume" in err
    assert not (out / runs.INCOMING).exists()  # the half-written save is gone
    assert runs.load_checkpoint(out).step == 4
