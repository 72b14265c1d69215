"""Training end to end: it learns, it resumes bit for bit, its checkpoints survive crashes."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tinyrun import VERSE, VOCAB
from tinyrun import tiny_config as config

from numpylm import GPT, CheckpointError
from numpylm.cli import main
from numpylm.generation import generate
from numpylm.io.loading import load
from numpylm.tokens.tokenizer import Tokenizer
from numpylm.training import runs
from numpylm.training import train as train_module
from numpylm.training.data import split_text
from numpylm.training.train import (
    COMMIT,
    INCOMING,
    TRAINER_STATE,
    TrainConfig,
    TrainingDiverged,
    evaluate,
    train,
)


@pytest.fixture(scope="module")
def full_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> train_module.TrainResult:
    """The reference: 12 steps that nothing interrupts."""
    return train(config(corpus, tmp_path_factory.mktemp("full") / "run"), progress=False)


def state(out: Path) -> dict[str, Any]:
    return json.loads((out / TRAINER_STATE).read_text())


def patch_loss(monkeypatch: pytest.MonkeyPatch, on_call: Callable[[int], float | None]) -> None:
    """Wrap GPT.loss_and_grads: ``on_call(n)`` runs before the n-th call (from 1) and may
    return a loss to report instead of the real one."""
    real = GPT.loss_and_grads
    calls = [0]

    def wrapped(self: GPT, *args: Any, **kwargs: Any) -> tuple[float, dict[str, np.ndarray]]:
        calls[0] += 1
        fake = on_call(calls[0])
        loss, grads = real(self, *args, **kwargs)
        return (loss if fake is None else fake), grads

    monkeypatch.setattr(GPT, "loss_and_grads", wrapped)


def ctrl_c_on(n: int) -> Callable[[int], None]:
    def press(call: int) -> None:
        if call == n:
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C

    return press


class Killed(BaseException):
    """Stands for the process dying (kill -9, power cut) at the point where it is raised."""


# --------------------------------------------------------------------------------------------
# It learns


def test_short_training_learns_the_pattern(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(config(corpus, out, steps=120, batch_size=8, eval_every=40), progress=False)
    first, last = result.history[0]["val_loss"], result.history[-1]["val_loss"]
    # Untrained, the model is close to a uniform guess over the vocabulary: loss ln(V).
    assert abs(first - math.log(VOCAB)) < 0.3
    assert last < 0.1 * math.log(VOCAB)
    assert len(result.losses) == 120 and result.step == 120

    # The run directory is a model directory; greedy continuation reproduces the verse.
    model, tokenizer = load(out)
    for prompt in ("to be, or", "the slings"):
        ids = generate(model, tokenizer.encode(prompt), 80, temperature=0.0)  # greedy
        text = tokenizer.decode(ids)
        assert len(text) > len(prompt) + len(VERSE)  # more than a whole verse was written ...
        assert text in VERSE * 3  # ... and it is the verse, word for word


def test_evaluate_numbers_are_consistent(corpus: Path, full_run: train_module.TrainResult) -> None:
    model, tokenizer = load(full_run.out)
    val_text = split_text(corpus.read_text(encoding="utf-8"))[1]
    r = evaluate(model, tokenizer, val_text, batch_size=3)
    ids = tokenizer.encode(val_text)
    first_chars = len(tokenizer.decode([ids[0]]))
    assert r["tokens"] == len(ids) - 1
    assert r["chars"] == len(val_text) - first_chars  # every character but the unpredicted first
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]), rel=1e-12)
    assert r["nats_per_char"] * r["chars"] == pytest.approx(r["loss"] * r["tokens"], rel=1e-12)
    assert r["bits_per_char"] == pytest.approx(r["nats_per_char"] / math.log(2), rel=1e-12)

    # Independently: float64 log-softmax over each non-overlapping window, summed.
    T = model.config.n_ctx
    total = 0.0
    for s in range(0, len(ids) - 1, T):
        window = np.asarray(ids[s : s + T + 1])
        z = model(window[:-1]).astype(np.float64)  # (t, V) logits
        z -= z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        total -= logp[np.arange(len(window) - 1), window[1:]].sum()
    assert r["loss"] == pytest.approx(total / (len(ids) - 1), rel=1e-5)
    # A finished run reports the same figures for the whole validation text.
    assert full_run.final is not None
    assert full_run.final["loss"] == pytest.approx(r["loss"], rel=1e-6)
    saved = json.loads((full_run.out / "eval_results.json").read_text())
    assert saved["step"] == 12 and saved["nats_per_char"] == pytest.approx(r["nats_per_char"])
    # The batch size changes nothing but the grouping.
    assert evaluate(model, tokenizer, val_text, batch_size=7)["loss"] == pytest.approx(
        r["loss"], rel=1e-6
    )


def test_eval_command_prints_loss_perplexity_and_nats_per_char(
    corpus: Path, full_run: train_module.TrainResult, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--model", str(full_run.out), "--data", str(corpus)]) == 0
    lines = capsys.readouterr().out.splitlines()
    values = {line[:18].strip(): float(line[18:].split()[0]) for line in lines[1:]}
    assert values["perplexity"] == pytest.approx(math.exp(values["loss"]), rel=1e-3)
    model, tokenizer = load(full_run.out)
    val_text = split_text(corpus.read_text(encoding="utf-8"))[1]
    expected = evaluate(model, tokenizer, val_text)
    assert values["loss"] == pytest.approx(expected["loss"], abs=1e-4)
    assert values["nats per character"] == pytest.approx(expected["nats_per_char"], abs=1e-4)
    # The training run's own last validation loss (2 batches) is close to the full figure.
    assert full_run.history[-1]["val_loss"] == pytest.approx(expected["loss"], rel=0.2)


def test_eval_command_splits(
    corpus: Path, full_run: train_module.TrainResult, capsys: pytest.CaptureFixture[str]
) -> None:
    text = corpus.read_text(encoding="utf-8")
    _, tokenizer = load(full_run.out)
    for split, part in [("all", text), ("train", split_text(text)[0])]:
        assert main(["eval", "-m", str(full_run.out), "--data", str(corpus), "--split", split]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        ids = tokenizer.encode(part)
        n_chars = len(part) - len(tokenizer.decode(ids[:1]))
        assert f"{len(ids) - 1:,} tokens, {n_chars:,} characters predicted" in first


# --------------------------------------------------------------------------------------------
# The run directory is a Hugging Face model directory


def test_transformers_reads_the_run_directory(full_run: train_module.TrainResult) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = full_run.out
    model, tokenizer = load(out)
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    hf_tok = transformers.GPT2Tokenizer.from_pretrained(out)
    text = "whether 'tis nobler in the mind"
    ids = tokenizer.encode(text)
    assert hf_tok.encode(text) == ids
    with torch.no_grad():
        hf_logits = hf(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(model(np.array(ids)), hf_logits, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Resume, interruption and crashes


def test_ctrl_c_saves_and_resume_is_bit_for_bit(
    corpus: Path,
    full_run: train_module.TrainResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    cfg = config(corpus, out)
    flags = ["--data", str(corpus), "--out", str(out), "--tokenizer", cfg.tokenizer]
    flags += ["--config", "tiny", "--n-embd", "32", "--n-ctx", "32", "--steps", "12"]
    flags += ["--batch-size", "4", "--lr", "0.01", "--warmup", "2", "--eval-every", "6"]
    flags += ["--eval-batches", "2", "--save-every", "4"]
    patch_loss(monkeypatch, ctrl_c_on(5))
    assert main(["train", *flags]) == 130
    err = capsys.readouterr().err
    assert "interrupted: saved step 5" in err and "--resume" in err
    assert state(out)["step"] == 5  # saved at the step Ctrl-C came in, not at save_every
    monkeypatch.undo()

    # Resume with no flags but the directory: the run's own arguments are used.
    assert main(["train", "--out", str(out), "--resume"]) == 0
    resumed = state(out)
    assert resumed["losses"] == full_run.losses  # exactly, bit for bit
    assert resumed["history"] == state(full_run.out)["history"]
    a, b = GPT.from_pretrained(out), GPT.from_pretrained(full_run.out)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert (out / "optimizer.safetensors").read_bytes() == (
        full_run.out / "optimizer.safetensors"
    ).read_bytes()


def test_resume_is_exact_in_float64_through_the_api(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = train(config(corpus, tmp_path / "full", dtype="float64", steps=8), progress=False)
    out = tmp_path / "run"
    patch_loss(monkeypatch, ctrl_c_on(3))
    stopped = train(config(corpus, out, dtype="float64", steps=8), progress=False)
    monkeypatch.undo()
    assert stopped.interrupted and stopped.step == 3 and stopped.final is None
    assert GPT.from_pretrained(out, dtype=np.float64).params["wte.weight"].dtype == np.float64
    resumed = train(config(corpus, out, dtype="float64", steps=8), resume=True, progress=False)
    assert resumed.losses == reference.losses
    assert resumed.history == reference.history


def test_crash_while_writing_keeps_the_previous_checkpoint(
    corpus: Path,
    full_run: train_module.TrainResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    real_save = Tokenizer.save_pretrained
    saves = [0]

    def save_then_die(self: Tokenizer, directory: Any) -> Path:
        saves[0] += 1
        if saves[0] == 2:  # the checkpoint of step 8, after its weights are written
            raise Killed
        return real_save(self, directory)

    monkeypatch.setattr(Tokenizer, "save_pretrained", save_then_die)
    with pytest.raises(Killed):
        train(config(corpus, out), progress=False)
    monkeypatch.undo()
    assert (out / INCOMING / "model.safetensors").is_file()  # the half-written checkpoint
    assert state(out)["step"] == 4  # the previous one, untouched
    GPT.from_pretrained(out)  # and readable by anyone meanwhile

    result = train(config(corpus, out), resume=True, progress=False)
    assert not (out / INCOMING).exists()
    assert result.losses == full_run.losses


def test_crash_after_commit_rolls_forward(
    corpus: Path,
    full_run: train_module.TrainResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    real_install = runs._install
    installs = [0]

    def install_one_file_then_die(out_dir: Path) -> None:
        installs[0] += 1
        if installs[0] < 2:
            return real_install(out_dir)
        commit = out_dir / COMMIT
        name = sorted(p.name for p in commit.iterdir())[0]
        os.replace(commit / name, out_dir / name)
        raise Killed

    monkeypatch.setattr(runs, "_install", install_one_file_then_die)
    with pytest.raises(Killed):
        train(config(corpus, out), progress=False)
    monkeypatch.undo()
    assert (out / COMMIT / TRAINER_STATE).is_file()
    assert state(out)["step"] == 4  # the top level still describes step 4 ...
    committed = {p.name: p.read_bytes() for p in (out / COMMIT).iterdir()}

    runs.recover(out)  # ... until opening it finishes moving step 8 in
    assert not (out / COMMIT).exists()
    # Forward, not back: the top level is now the committed step 8, file for file (rolling
    # back, deleting .commit, would leave step 4 with one file of step 8 mixed in).
    assert state(out)["step"] == 8
    assert {name: (out / name).read_bytes() for name in committed} == committed

    result = train(config(corpus, out), resume=True, progress=False)
    assert result.losses == full_run.losses


@pytest.mark.parametrize("damage", ["truncate weights", "flip a bit", "truncate state"])
def test_corrupt_checkpoint_gives_clear_error_and_is_kept(
    damage: str,
    full_run: train_module.TrainResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    shutil.copytree(full_run.out, out)
    if damage == "truncate weights":
        target = out / "model.safetensors"
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        expected = "model.safetensors is corrupt or truncated"
    elif damage == "flip a bit":
        target = out / "optimizer.safetensors"
        raw = bytearray(target.read_bytes())
        raw[-5] ^= 0x10
        target.write_bytes(bytes(raw))
        expected = "optimizer.safetensors is corrupt or truncated"
    else:
        target = out / TRAINER_STATE
        target.write_bytes(target.read_bytes()[:100])
        expected = "not valid JSON"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match=expected):
        train(TrainConfig(**{**state(full_run.out)["args"], "out": str(out)}), resume=True)
    assert main(["train", "--out", str(out), "--resume", "--steps", "20"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("numpylm: error:") and expected in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_gpt2_tokenizer_run(corpus: Path, tmp_path: Path, tiktoken_gpt2: None) -> None:
    out = tmp_path / "run"
    cfg = config(corpus, out, tokenizer="gpt2", n_ctx=16, steps=2, batch_size=2, eval_every=2)
    result = train(cfg, progress=False)
    with warnings.catch_warnings():
        # The run's vocab.json + merges.txt are the tokenizer it was trained with, though
        # tiktoken spells GPT-2's split pattern differently: no TokenizerMismatchWarning.
        warnings.simplefilter("error")
        model, tokenizer = load(out)
    assert model.config.vocab_size == 50257 and tokenizer.n_vocab == 50257
    assert tokenizer.encode(VERSE) == Tokenizer.gpt2().encode(VERSE)
    assert result.final is not None and result.final["loss"] < math.log(50257)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    patch_loss(monkeypatch, lambda call: math.nan if call == 7 else None)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 7: loss nan.*step 4"):
        train(config(corpus, out), progress=False)
    monkeypatch.undo()
    assert state(out)["step"] == 4
    model = GPT.from_pretrained(out)
    assert all(np.isfinite(p).all() for p in model.params.values())


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_huge_learning_rate_diverges_with_a_message(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = ["--data", str(corpus), "--out", str(out), "--tokenizer", "bpe:280"]
    flags += ["--config", "tiny", "--n-ctx", "16", "--steps", "10", "--batch-size", "2"]
    flags += ["--lr", "1e30", "--warmup", "0", "--save-every", "1"]
    assert main(["train", *flags]) == 1
    err = capsys.readouterr().err
    assert "numpylm: error: training diverged at step" in err and "--lr" in err


def test_fresh_run_refuses_to_overwrite_and_resume_checks_the_text(
    corpus: Path, full_run: train_module.TrainResult, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="--resume"):
        train(TrainConfig(**{**state(full_run.out)["args"]}), progress=False)
    other = tmp_path / "other.txt"
    other.write_text(VERSE * 49, encoding="utf-8")
    out = tmp_path / "run"
    shutil.copytree(full_run.out, out)
    with pytest.raises(ValueError, match="not the text this run was trained on"):
        train(config(other, out), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="no training run to resume"):
        train(config(corpus, tmp_path / "empty"), resume=True, progress=False)


# --------------------------------------------------------------------------------------------
# The command line


def test_train_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--out", "--tokenizer", "--config", "--n-layer", "--resume", "--lr"):
        assert flag in out
    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0
    assert "--split" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "0"], "argument --steps: must be at least 1"),
        (["--lr", "-1"], "argument --lr: must be a finite number greater than 0"),
        (["--lr", "nan"], "argument --lr: must be a finite number"),
        (["--tokenizer", "bpe:12"], "SIZE in bpe:SIZE must be a whole number >= 257"),
        (["--config", "huge"], "argument --config: invalid choice: 'huge'"),
        (["--lr", "0.1", "--min-lr", "1"], "min_lr (1.0) must not exceed lr (0.1)"),
        (["--n-head", "3", "--n-embd", "32"], "n_embd (32) must be divisible by n_head (3)"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    flags: list[str], message: str, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(corpus), "--out", str(tmp_path / "run"), *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("numpylm train: error:") and message in err[-1]


def test_missing_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    assert "--data FILE is required" in capsys.readouterr().err
