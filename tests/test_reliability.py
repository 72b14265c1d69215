"""Hostile use: nothing of the user's is overwritten, a run directory is locked while it is
written, a diverging run never saves broken weights, output errors end like a Unix tool's,
and limits are checked before the work starts. Each refusal is checked through the API and,
where a user meets it there, the command line: one line on standard error, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tinyrun import VERSE, tiny_config

from numpylm import GPT, CheckpointError, GPTConfig, generate_batch
from numpylm.cli import main
from numpylm.io.loading import BUILTIN_DIR, TokenizerMismatchWarning, load
from numpylm.tokens.tokenizer import Tokenizer
from numpylm.training import runs
from numpylm.training.finetune import Example, FinetuneConfig, finetune, write_jsonl
from numpylm.training.train import TRAINER_STATE, TrainingDiverged, train

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """The error numpylm printed: one line (after a training run's progress bar, if any)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    if "step/s" in err:  # tqdm's progress bar came first
        err = err.splitlines()[-1]
    assert len(err.splitlines()) == 1 and err.startswith("numpylm: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------
# --out never destroys what is there


def test_a_folder_that_is_not_a_run_is_refused_and_kept(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("precious")
    before = snapshot(out)
    with pytest.raises(CheckpointError, match=r"is not empty .* not a numpylm run"):
        train(tiny_config(corpus, out), progress=False)
    argv = ["train", "--data", str(corpus), "--out", str(out), "--steps", "2"]
    assert main(argv) == 1
    one_line_error(capsys, "--overwrite", "notes.txt")
    assert snapshot(out) == before  # not even a lock file was left behind


def test_overwrite_deletes_a_run_and_nothing_else(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("old")
    with pytest.raises(CheckpointError, match=r"--overwrite deletes only .*notes.txt"):
        train(tiny_config(corpus, out, steps=2), progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "old" and [*out.iterdir()] == [out / "notes.txt"]
    out = tmp_path / "run"
    result = train(tiny_config(corpus, out, steps=2), progress=False)
    assert result.step == 2 and (out / TRAINER_STATE).is_file()
    # a finished run is refused, and --overwrite starts it again from step 0
    with pytest.raises(CheckpointError, match=r"already holds a training run .*--overwrite"):
        train(tiny_config(corpus, out, steps=2), progress=False)
    assert train(tiny_config(corpus, out, steps=1), progress=False, overwrite=True).step == 1
    assert len(json.loads((out / TRAINER_STATE).read_text())["losses"]) == 1


def test_resume_and_overwrite_do_not_go_together(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(tmp_path / "r"), "--resume", "--overwrite"])
    assert e.value.code == 2


def test_a_run_killed_before_its_first_checkpoint_starts_again(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"

    def die(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands for SIGKILL while the first checkpoint is written

    monkeypatch.setattr(Tokenizer, "save_pretrained", die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(corpus, out), progress=False)
    monkeypatch.undo()
    assert (out / runs.INCOMING).is_dir() and (out / runs.RUN_MARKER).is_file()
    assert not (out / TRAINER_STATE).exists()
    assert train(tiny_config(corpus, out), progress=False).step == 12  # no --overwrite needed


def test_finetune_never_writes_into_the_model_it_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base"
    shutil.copytree(BUILTIN_DIR, base)
    data = write_jsonl(tmp_path / "d.jsonl", [Example("Say hi.", "hi")] * 4)
    before = snapshot(base)
    for overwrite in (False, True):
        cfg = FinetuneConfig(data=str(data), out=str(base), model=str(base), steps=1)
        with pytest.raises(CheckpointError, match="where the run reads"):
            finetune(cfg, progress=False, overwrite=overwrite)
    argv = ["finetune", "--model", str(base), "--data", str(data), "--out", str(base)]
    assert main([*argv, "--overwrite"]) == 1
    one_line_error(capsys, "where the run reads")
    assert snapshot(base) == before
    # nor into the folder that holds the data it reads
    inside = tmp_path / "work"
    inside.mkdir()
    shutil.copy(data, inside / "d.jsonl")
    cfg = FinetuneConfig(data=str(inside / "d.jsonl"), out=str(inside), steps=1)
    with pytest.raises(CheckpointError, match="where the run reads"):
        finetune(cfg, progress=False, overwrite=True)
    assert (inside / "d.jsonl").is_file()


def test_train_resume_on_a_finetune_run_says_what_it_is(tmp_path: Path) -> None:
    out = tmp_path / "ft"
    out.mkdir()
    state = {"format": runs.STATE_FORMAT, "kind": "finetune", "args": {}, "step": 3, "files": {}}
    (out / TRAINER_STATE).write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="not a training run but a fine-tuning run"):
        runs.saved_args(out, "train")


# --------------------------------------------------------------------------------------------
# A run directory is locked while it is written


HOLD = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)  # what a training run holds, on the directory itself
marker = {"format": "numpylm-trainer-state-1", "kind": "train", "pid": os.getpid()}
open(os.path.join(sys.argv[1], ".numpylm-run"), "w").write(json.dumps(marker))
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_second_run_is_refused_and_sigkill_frees_the_directory(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train(tiny_config(corpus, out, steps=4), progress=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        busy = rf"is in use by process {holder.pid} \(numpylm train\)"
        with pytest.raises(CheckpointError, match=busy):
            train(tiny_config(corpus, out, steps=8), resume=True, progress=False)
        assert main(["train", "--out", str(out), "--resume", "--steps", "8"]) == 1
        one_line_error(capsys, f"is in use by process {holder.pid}")
        GPT.from_pretrained(out)  # readers are never blocked
        load(out)
    finally:
        holder.kill()  # SIGKILL: the operating system releases the lock
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert train(tiny_config(corpus, out, steps=8), resume=True, progress=False).step == 8


# --------------------------------------------------------------------------------------------
# A diverging run keeps a finite checkpoint, and says which


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow, which is the point
def test_the_update_that_breaks_the_weights_is_never_saved(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train(tiny_config(corpus, out, steps=4), progress=False)  # a good checkpoint, step 4
    # resume with a learning rate that overflows the weights in the next update
    cfg = tiny_config(corpus, out, steps=8, lr=1e300, warmup=0, min_lr=1e300, grad_clip=0)
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+.* keeps its last .*step 4"):
        train(cfg, resume=True, progress=False)
    model = GPT.from_pretrained(out)
    assert all(np.isfinite(p).all() for p in model.params.values())
    assert json.loads((out / TRAINER_STATE).read_text())["step"] == 4
    # a fresh run that diverges before any checkpoint says so
    argv = ["train", "--data", str(corpus), "--out", str(tmp_path / "new"), "--steps", "4"]
    argv += ["--lr", "1e300", "--warmup", "0", "--grad-clip", "0", "--tokenizer", "bpe:300"]
    argv += ["--config", "tiny", "--n-embd", "32", "--n-ctx", "32", "--batch-size", "4"]
    assert main(argv) == 1
    one_line_error(capsys, "no checkpoint had been saved yet")


# --------------------------------------------------------------------------------------------
# Output errors end like a Unix tool's


def numpylm_shell(args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m numpylm ARGS`` in bash; its own exit status is printed to stderr."""
    script = f'"{sys.executable}" -m numpylm {args}; echo "status=${{PIPESTATUS[0]}}" >&2'
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs bash and /dev/full")
@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        ("generate ROMEO: -n 200 --seed 0 | head -c 5", 141, ""),
        ("generate ROMEO: -n 30 --trace -t 0 | head -c 5", 141, ""),
        ("generate ROMEO: -n 5 --seed 0 > /dev/full", 1, "write error: No space left on device"),
        ("generate ROMEO: -n 5 --seed 0 >&-", 1, "write error: Bad file descriptor"),
    ],
)
def test_output_errors_end_quietly_or_in_one_line(args: str, status: int, message: str) -> None:
    done = numpylm_shell(args)
    err = done.stderr.strip().splitlines()
    assert err[-1] == f"status={status}", done.stderr
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr
    if message:
        assert err[:-1] == [f"numpylm: {message}"]
    else:
        assert err[:-1] == [] and len(done.stdout) == 5


def test_the_exit_codes_are_documented(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for code in ("0", "1", "2", "130", "141"):
        assert f"\n  {code} " in help_text
    reliability = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert "| 141 |" in reliability


# --------------------------------------------------------------------------------------------
# Offline, and limits checked before the work


def test_a_model_folder_without_a_tokenizer_offline_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests
    import tiktoken

    model_dir = GPT(GPTConfig(vocab_size=50257, n_ctx=16, n_layer=1, n_head=1, n_embd=8))
    model_dir.save_pretrained(tmp_path / "m")

    def offline(name: str) -> None:
        raise requests.ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(CheckpointError, match=r"could not get GPT-2's tokenizer.*vocab.json"):
        load(tmp_path / "m")
    assert main(["generate", "hi", "--model", str(tmp_path / "m")]) == 1
    one_line_error(capsys, "ConnectionError", "TIKTOKEN_CACHE_DIR")


def test_too_many_samples_are_refused_before_the_memory_is_taken(
    tiny_model: GPT, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(
        ValueError,
        match=r"10000000 sequences needs about .* GiB, this machine has .* of which .* free",
    ):
        generate_batch(tiny_model, [[1, 2]], 5, num_samples=10**7)
    assert main(["generate", "ROMEO:", "--num-samples", "1000000000"]) == 1
    one_line_error(capsys, "1000000000 sequences needs about", "--num-samples")


def test_a_cache_of_another_model_is_a_clear_error(tiny_model: GPT) -> None:
    other = GPT(GPTConfig(vocab_size=67, n_ctx=32, n_layer=3, n_head=4, n_embd=16))
    with pytest.raises(ValueError, match=r"does not belong to this model.*new_cache"):
        tiny_model(np.array([[1, 2]]), cache=other.new_cache())
    wide = GPT(GPTConfig(vocab_size=67, n_ctx=32, n_layer=2, n_head=4, n_embd=16), dtype=np.float64)
    with pytest.raises(ValueError, match="float64"):
        tiny_model(np.array([[1, 2]]), cache=wide.new_cache())


def test_stop_strings_must_be_text(tiny_model: GPT, capsys: pytest.CaptureFixture[str]) -> None:
    from numpylm import complete

    model, tokenizer = load()
    with pytest.raises(TypeError, match="stop must be a string or a list of strings, got int 5"):
        complete(model, tokenizer, "ROMEO:", stop=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got bytes .*decode bytes to text first"):
        complete(model, tokenizer, "ROMEO:", stop=b"\n")  # type: ignore[arg-type]
    with pytest.raises(SystemExit) as e:
        main(["generate", "ROMEO:", "--stop", "\\x"])
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # the prompt is not printed before the error
    assert "bad backslash escape" in captured.err and "Traceback" not in captured.err


def test_edited_token_ids_are_not_trained_on(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_config(corpus, out, steps=4), progress=False)
    cache = next((out / "data").glob("*.train.npy"))
    ids = np.load(cache)
    ids[:10] = 0
    np.save(cache, ids)
    with pytest.raises(CheckpointError, match=r"token ids .* are not the ones this run was"):
        train(tiny_config(corpus, out, steps=8), resume=True, progress=False)
    shutil.rmtree(out / "data")  # deleting the cache tokenises the text again: the same ids
    assert train(tiny_config(corpus, out, steps=8), resume=True, progress=False).step == 8


# --------------------------------------------------------------------------------------------
# A tokenizer that does not belong to the model


def test_a_swapped_tokenizer_is_named_in_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from numpylm import train_bpe

    model_dir = tmp_path / "m"
    shutil.copytree(BUILTIN_DIR, model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(model_dir)  # its own tokenizer: no warning
    train_bpe(VERSE * 20, 270).save_pretrained(model_dir)
    with pytest.warns(TokenizerMismatchWarning, match="not the one the model was trained with"):
        load(model_dir)
    assert main(["generate", "ROMEO:", "--model", str(model_dir), "-n", "2", "--seed", "0"]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("numpylm: warning:") and "fingerprint" in err
    # a folder without the record (a Hugging Face download, say) loads as before
    config = json.loads((model_dir / "config.json").read_text())
    del config["numpylm_tokenizer_sha256"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(model_dir)


def test_runs_record_their_tokenizer(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_config(corpus, out, steps=2), progress=False)
    recorded = json.loads((out / "config.json").read_text())["numpylm_tokenizer_sha256"]
    from numpylm.tokens.tokenizer import Tokenizer
    from numpylm.training.data import tokenizer_fingerprint

    assert recorded == tokenizer_fingerprint(Tokenizer.from_pretrained(out))


def test_a_tokenizer_with_ids_the_model_lacks_is_refused(tmp_path: Path) -> None:
    from numpylm import train_bpe

    small = GPT(GPTConfig(vocab_size=262, n_ctx=16, n_layer=1, n_head=1, n_embd=8))
    small.save_pretrained(tmp_path / "m")
    train_bpe(VERSE * 20, 270).save_pretrained(tmp_path / "m")  # 270 tokens > 262
    with pytest.raises(CheckpointError, match="270 tokens but the model only 262"):
        load(tmp_path / "m")
