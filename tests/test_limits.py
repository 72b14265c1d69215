"""Limits checked before the work, errors that are never tracebacks, and messages that blame
the right thing (issue 15, classes 3, 4 and 7; docs/reliability.md, "Limits, start-up and
messages")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numpylm import GPT, GPTConfig, load, memory
from numpylm.cli import main
from numpylm.io.checkpoint import CheckpointError, read_safetensors, write_safetensors
from numpylm.io.loading import BUILTIN_DIR
from numpylm.models.gpt2.model import param_shapes
from numpylm.sampling import softmax
from numpylm.sampling.penalties import repetition_penalty
from numpylm.sampling.temperature import temperature
from numpylm.training.finetune import DataError, FinetuneConfig, finetune, read_jsonl
from numpylm.training.train import TrainConfig, train

SRC = Path(__file__).resolve().parents[1] / "src"


def one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# --- class 3: memory, estimated before anything is allocated ------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        dict(vocab_size=67, n_ctx=32, n_layer=2, n_head=4, n_embd=16),
        dict(vocab_size=50257, n_ctx=1024, n_layer=12, n_head=12, n_embd=768),
        dict(vocab_size=1024, n_ctx=7, n_layer=3, n_head=1, n_embd=5),
    ],
)
def test_the_parameter_count_is_the_models(shape: dict[str, int]) -> None:
    """The estimate's count, from the formula, against the shapes of the real table."""
    counted = sum(int(np.prod(s)) for s in param_shapes(GPTConfig(**shape)).values())
    del shape["n_head"]
    assert memory.num_params(**shape) == counted


def test_the_refusal_has_the_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available", lambda: (24 * 2**30, 18 * 2**30))
    with pytest.raises(ValueError) as e:
        memory.fits(int(23.8 * 2**30), "training", "use less")
    assert str(e.value) == (
        "training needs about 23.8 GiB, this machine has 24.0 GiB of which 18.0 GiB free: use less"
    )
    memory.fits(18 * 2**30, "training", "use less")  # exactly what is free: it runs


def test_available_memory_is_read_from_proc_meminfo() -> None:
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo here")
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    found = memory.available()
    assert found is not None
    total = int(info["MemTotal"].split()[0]) * 1024
    assert found[0] <= total and 0 < found[1] <= found[0]


def test_a_config_of_a_billion_layers_is_refused_before_the_table(
    tiny_model: GPT, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"n_layer": 10**9}))
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"loading a model of .* needs about .* TiB"):
        GPT.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"building a model .* needs about"):
        GPT(GPTConfig(n_layer=10**9, n_head=1, n_embd=8, vocab_size=10, n_ctx=4))
    assert main(["generate", "--model", str(tmp_path), "hi"]) == 1
    assert time.perf_counter() - started < 5  # the table alone would take minutes
    one_line(capsys, "needs about", "n_layer=1000000000")


@pytest.mark.parametrize(
    "flags",
    [
        ["--n-embd", "1048576", "--n-head", "1"],
        ["--batch-size", "100000000"],
        ["--steps", "1000000000000"],
        ["--n-ctx", "10000000"],
    ],
)
def test_a_run_too_large_for_memory_is_refused_first(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.txt"
    data.write_text("To be, or not to be, that is the question. " * 50)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *flags]) == 1
    one_line(capsys, "needs about", "this machine has", "free: use a smaller")
    assert not out.exists()  # refused before the run directory was made


def test_a_data_file_too_large_is_refused_before_it_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(8 * 2**30)  # sparse: takes no disk
    free = memory.available()
    if free is None or memory.text_bytes(8 * 2**30) < free[1]:
        pytest.skip("this machine could hold an 8 GiB text")
    started = time.perf_counter()
    assert main(["eval", "--data", str(huge)]) == 1
    one_line(capsys, f"reading and tokenising {huge} (8.0 GiB) needs about")
    assert main(["train", "--data", str(huge), "--out", str(tmp_path / "r")]) == 1
    one_line(capsys, "needs about")
    jsonl = huge.rename(tmp_path / "huge.jsonl")
    assert main(["finetune", "--data", str(jsonl), "--out", str(tmp_path / "f")]) == 1
    one_line(capsys, "huge.jsonl (8.0 GiB) needs about")
    assert time.perf_counter() - started < 10  # reading 8 GiB would take longer


# --- class 4: tracebacks --------------------------------------------------------------------


def test_deeply_nested_jsonl_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    good = '{"prompt": "a", "response": "b"}'
    deep = '{"prompt": ' + "[" * 5000 + "]" * 5000 + ', "response": "b"}'
    digits = '{"prompt": "a", "response": ' + "9" * 5000 + "}"
    path.write_text("\n".join([good, deep, digits]) + "\n")
    with pytest.raises(DataError) as e:
        read_jsonl(path)
    assert f"{path}:2: invalid JSON (arrays or objects nested too deeply" in str(e.value)
    assert f"{path}:3: invalid JSON" in str(e.value)


def _numpylm(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "numpylm", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        **kwargs,
    )


@pytest.mark.parametrize("args", [["chat"], ["generate", "-"]])
def test_a_closed_standard_input_is_an_error(args: list[str]) -> None:
    r = _numpylm(*args, stdin=None, preexec_fn=lambda: os.close(0))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("numpylm: error: standard input is closed"), r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_the_command_imports_numpylm_inside_main() -> None:
    """Ctrl-C can only be an exit status once main() runs: so ``import numpylm.cli`` (what
    the console script does first) imports neither NumPy nor the rest of numpylm."""
    code = "import sys, numpylm.cli; print(sorted(m for m in sys.modules if 'numpy' in m))"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    loaded = eval(r.stdout)  # a list of module names
    assert "numpy" not in loaded
    # numpylm.generate and numpylm.trace are _deprecated's stand-ins, not modules read
    assert set(loaded) <= {"numpylm", "numpylm._deprecated", "numpylm.cli", *_moved()}, loaded


def _moved() -> list[str]:
    from numpylm._deprecated import MOVED

    return list(MOVED)


def test_ctrl_c_while_starting_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpylm.cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(numpylm.cli, "build_parser", interrupted)  # where the imports happen
    assert main(["generate", "ROMEO:"]) == 130
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "numpylm", "generate", "ROMEO:", "-n", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Wait until NumPy is being loaded: past Python's own start-up (where only Python could
    # take Ctrl-C), inside the imports that printed a traceback before.
    maps = Path(f"/proc/{p.pid}/maps")
    deadline = time.monotonic() + 30
    while "numpy" not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.002)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err


# --- class 7: messages that blame the right thing --------------------------------------------


@pytest.mark.parametrize("value", ["1e-320", "1e-39", "1e39", "-1", "nan"])
@pytest.mark.parametrize("flag", ["--temperature", "--repetition-penalty"])
def test_factors_float32_cannot_carry_are_usage_errors(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["generate", "ROMEO:", flag, value])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "from 1.18e-38 to 3.4e+38 (float32's range" in err


def test_tiny_factors_give_the_exact_distribution() -> None:
    """Down to float32's smallest normal number, temperature and the repetition penalty give
    the distribution float64 arithmetic gives (before: NaN, blamed on the model's weights)."""
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((4, 50)) * 30).astype(np.float32)
    z[:, :3] = z[:, [0]]  # ties: the only way a tiny factor leaves more than one token
    z[1] = -np.abs(z[1])  # a row of negative scores only, as GPT-2's often are
    seen = rng.random((4, 50)) < 0.5
    seen[:, :3] = True
    for factor in [1.2e-38, 1e-37, 1e-30, 1e-8, 0.3, 7.0, 1e30, 3.4e38]:
        z64 = z.astype(np.float64)
        want_t = _softmax64(z64 / np.float64(np.float32(factor)))
        np.testing.assert_allclose(softmax(temperature(z, factor)), want_t, atol=1e-6)
        theta = np.float64(np.float32(factor))
        pen = np.where(seen, np.where(z64 > 0, z64 / theta, z64 * theta), z64)
        got = softmax(repetition_penalty(z, seen, factor))
        np.testing.assert_allclose(got, _softmax64(pen), atol=1e-6)
        assert got.dtype == np.float32


def _softmax64(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_an_empty_stop_string_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["generate", "ROMEO:", "--stop", ""])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == "" and "stop must be non-empty strings" in err


def test_weights_that_are_not_finite_are_named(
    tiny_model: GPT, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    tensors = read_safetensors(weights)
    tensors["transformer.h.1.mlp.c_fc.weight"][2, 3] = np.nan
    write_safetensors(weights, tensors)
    with pytest.raises(CheckpointError, match=r"tensor 'h.1.mlp.c_fc.weight' holds 1 value"):
        GPT.from_pretrained(tmp_path / "m")
    data = tmp_path / "ex.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n' * 4)
    cfg = FinetuneConfig(data=str(data), out=str(tmp_path / "out"), model=str(tmp_path / "m"))
    with pytest.raises(CheckpointError, match=r"h\.1\.mlp\.c_fc\.weight"):
        finetune(cfg, progress=False)  # before: "training diverged at step 1 ... lower --lr"


def test_paths_that_are_not_files_say_what_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for path, kind in [("fifo", "a named pipe (FIFO)"), ("dir", "a directory")]:
        with pytest.raises(CheckpointError, match=f"is {re.escape(kind)}, not a file"):
            train(TrainConfig(data=str(tmp_path / path), out=str(tmp_path / "r")), progress=False)
        with pytest.raises(CheckpointError, match="not a file"):
            read_jsonl(tmp_path / path)
    if Path("/dev/zero").exists():
        assert main(["eval", "--data", "/dev/zero"]) == 1
        one_line(capsys, "'/dev/zero' is a device, not a file")


def _model_dir(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    target.mkdir()
    for f in BUILTIN_DIR.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_model_files_that_are_directories_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model_dir(tmp_path)
    for name in ("model.safetensors", "vocab.json", "merges.txt", "config.json"):
        kept = (model / name).read_bytes()
        (model / name).unlink()
        (model / name).mkdir()
        with pytest.raises(CheckpointError, match=f"{name} '.*' is a directory, not a file"):
            load(str(model))
        (model / name).rmdir()
        (model / name).write_bytes(kept)
    (model / "merges.txt").unlink()  # vocab.json alone: not GPT-2's tokenizer instead
    with pytest.raises(FileNotFoundError, match=r"has no merges\.txt"):
        load(str(model))
    assert main(["generate", "--model", str(model), "hi"]) == 1
    one_line(capsys, "has no merges.txt")


@pytest.mark.parametrize("changes", [{"batch_size": 10**8, "steps": 1}, {"steps": 10**12}])
def test_a_finetuning_run_too_large_is_refused_before_it_trains(
    changes: dict[str, int], tmp_path: Path
) -> None:
    data = tmp_path / "ex.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n' * 20)
    cfg = FinetuneConfig(data=str(data), out=str(tmp_path / "out"), **changes)
    with pytest.raises(ValueError, match=r"fine-tuning .* parameters on batches .* needs about"):
        finetune(cfg, progress=False)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_many_short_answers_of_a_long_context_model_are_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The memory check counts the positions the answers can reach (prompt + new tokens; the
    KV cache grows as they do), not the model's whole context: 100 short answers of SmolLM2
    (8,192 positions) were refused for 337.6 GiB."""
    import numpylm
    from numpylm.generation.context import check_memory

    model = GPT(GPTConfig(vocab_size=67, n_ctx=4096, n_layer=2, n_head=4, n_embd=16), seed=0)
    whole = memory.generation_bytes(67, 4096, 2, 4, 16, batch_size=100)
    monkeypatch.setattr(memory, "available", lambda: (whole, whole // 10))  # a tenth is free
    with pytest.raises(ValueError, match="continuing 100 sequences needs about"):
        check_memory(model, 100)  # the whole context, for every sequence
    rows = numpylm.generate_batch(model, [[1, 2, 3]], 5, num_samples=100, seed=0)
    assert len(rows) == 100 and all(len(r) == 8 for r in rows)
    tokenizer = numpylm.Tokenizer.from_ranks({bytes([b]): b for b in range(67)})
    texts = numpylm.complete_batch(model, tokenizer, "%&", max_new_tokens=5, num_samples=100)
    assert len(texts) == 100
    with pytest.raises(ValueError, match="continuing 100 sequences needs about"):
        numpylm.generate_batch(model, [[1, 2, 3]], 4000, num_samples=100, seed=0)
