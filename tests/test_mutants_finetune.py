"""Fine-tuning's bookkeeping, word for word: the template, the JSON Lines reader and writer,
the batches, the validation split, the batch order, the step count and the configuration's
checks (for the mutants of ``training/finetune.py``'s data functions; docs/reliability.md,
"Mutation testing")."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from numpylm import memory, train_bpe
from numpylm.io.checkpoint import CheckpointError
from numpylm.training.finetune import (
    TEMPLATE,
    DataError,
    Example,
    FinetuneConfig,
    batch_indices,
    count_steps,
    encode_example,
    format_example,
    format_prompt,
    format_response,
    load_template,
    pad_batch,
    read_jsonl,
    read_records,
    split_examples,
    split_template,
    write_jsonl,
)
from numpylm.training.runs import STREAM_ORDER, STREAM_SPLIT, TEMPLATE_FILE

# --------------------------------------------------------------------------------------------
# The template


def test_split_template_keeps_the_whitespace_before_the_response() -> None:
    assert split_template("A {prompt} B \n {response}") == ("A {prompt} B", " \n {response}")
    assert split_template("{prompt}{response}") == ("{prompt}", "{response}")
    assert format_prompt("p", "<{prompt}> ::\t{response}") == "<p> ::"
    assert format_response("r", "<{prompt}> ::\t{response}") == "\tr"
    assert format_response("r") == " r"
    assert format_example("p", "r", "<{prompt}> ::\t{response}") == "<p> ::\tr"


def test_split_template_refusals_word_for_word() -> None:
    with pytest.raises(TypeError) as e:
        split_template(None)  # type: ignore[arg-type]
    assert str(e.value) == "template must be a str, got NoneType"
    for bad in ["{prompt}", "{response}", "x {response}", "{prompt} {response} {response}"]:
        with pytest.raises(ValueError) as v:
            split_template(bad)
        assert str(v.value) == (
            f"template must contain {{prompt}} once and end with {{response}}, e.g. "
            f"{TEMPLATE!r}; got {bad!r}"
        )
    assert split_template("{prompt} {response}") == ("{prompt}", " {response}")


def test_an_empty_prompt_part_is_the_end_of_text_token() -> None:
    tok = train_bpe("abc abc abd", 260)
    ids, n_prompt = encode_example(tok, Example("", "abc"), "{prompt}{response}")
    assert ids[:n_prompt] == [tok.eot_id] and n_prompt == 1
    assert ids == [tok.eot_id, *tok.encode("abc"), tok.eot_id]
    ids, n_prompt = encode_example(tok, Example("ab", "c"), "{prompt}{response}")
    assert ids == [*tok.encode("ab"), *tok.encode("c"), tok.eot_id]
    assert n_prompt == len(tok.encode("ab"))


def test_load_template(tmp_path: Path) -> None:
    assert load_template(tmp_path / "absent") is None
    assert load_template(tmp_path) is None  # a directory without the file
    (tmp_path / TEMPLATE_FILE).write_text(json.dumps({"template": "Q {prompt} A {response}"}))
    assert load_template(tmp_path) == "Q {prompt} A {response}"
    (tmp_path / TEMPLATE_FILE).write_text(json.dumps({"template": "no fields"}))
    with pytest.raises(CheckpointError) as e:
        load_template(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / TEMPLATE_FILE}: template must contain")
    (tmp_path / TEMPLATE_FILE).write_text(json.dumps({"template": 3}))
    with pytest.raises(CheckpointError) as e:
        load_template(tmp_path)
    assert str(e.value) == f"{tmp_path / TEMPLATE_FILE}: template must be a str, got int"
    (tmp_path / TEMPLATE_FILE).write_text(json.dumps({}))
    with pytest.raises(CheckpointError, match="got NoneType"):
        load_template(tmp_path)


# --------------------------------------------------------------------------------------------
# JSON Lines


def _bad(tmp_path: Path, content: bytes, keys: tuple[str, ...] = ("prompt", "response")) -> str:
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_records(path, keys)
    return str(e.value)


def test_each_bad_line_word_for_word(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    shape = '{"prompt": "...", "response": "..."}'
    assert _bad(tmp_path, b'{"prompt": "a"') == (
        f"1 bad line in {p}; each line must be a JSON object {shape}:\n"
        f"{p}:1: invalid JSON (Expecting ',' delimiter at column 15)"
    )
    cases = {
        b"true": "expected a JSON object, got a boolean",
        b"null": "expected a JSON object, got null",
        b"1.5": "expected a JSON object, got a number",
        b'{"prompt": "a", "response": {}}': "'response' must be a string, got an object",
        b'{"prompt": [], "response": "b"}': "'prompt' must be a string, got an array",
        b'{"prompt": false, "response": "b"}': "'prompt' must be a string, got a boolean",
        b'{"response": "b"}': "missing key 'prompt'",
        b'{"prompt": "a", "response": "b", "z": 1, "y": 2}': (
            "unexpected key 'y', 'z' (only 'prompt' and 'response' are allowed)"
        ),
        b"[" * 100_000: "invalid JSON (arrays or objects nested too deeply to read)",
        b"\xc3": "not UTF-8 text",
    }
    for line, reason in cases.items():
        assert _bad(tmp_path, b"\n" + line + b"\n").endswith(f":\n{p}:2: {reason}"), reason
    big = _bad(tmp_path, b"1" * 5000)
    assert f"{p}:1: invalid JSON (Exceeds the limit (4300 digits)" in big
    three = ("a", "b", "c")
    assert _bad(tmp_path, b'{"a": "", "b": "", "d": ""}', three).endswith(
        "missing key 'c'"
    ) and _bad(tmp_path, b'{"a": "", "b": "", "c": "", "d": ""}', three).endswith(
        "(only 'a', 'b' and 'c' are allowed)"
    )
    assert _bad(tmp_path, b"", three) == (
        f'{p} holds no examples (it is empty); write one JSON object {{"a": "...", '
        f'"b": "...", "c": "..."}} a line'
    )


def test_counting_bad_lines(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    two = _bad(tmp_path, b"x\ny\n")
    assert two.startswith(f"2 bad lines in {p};") and "more)" not in two
    assert two.endswith(
        f"{p}:1: invalid JSON (Expecting value at column 1)\n{p}:2: invalid JSON "
        "(Expecting value at column 1)"
    )
    ten = _bad(tmp_path, b"x\n" * 10)
    assert ten.count(f"\n{p}:") == 10 and "more)" not in ten
    eleven = _bad(tmp_path, b"x\n" * 11)
    assert eleven.count(f"\n{p}:") == 10 and eleven.endswith("\n(and 1 more)")


def test_a_check_refuses_lines_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n \t\n{"prompt": "c", "response": "c"}\n')

    def differ(values: tuple[str, ...]) -> None:
        if values[0] == values[1]:
            raise ValueError("the same twice")

    with pytest.raises(DataError) as e:
        read_records(p, ("prompt", "response"), differ)
    assert str(e.value).endswith(f"{p}:3: the same twice")
    assert read_records(p, ("response", "prompt")) == [("b", "a"), ("c", "c")]
    assert read_jsonl(p) == [Example("a", "b"), Example("c", "c")]


def test_a_file_beyond_memory_is_refused_with_its_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n' * 100)
    need = memory.text_bytes(p.stat().st_size)
    monkeypatch.setattr(memory, "available", lambda: (10 * need, need - 1))
    with pytest.raises(ValueError) as e:
        read_records(p, ("prompt", "response"), fewer="use fewer pairs")
    assert f"reading and tokenising {p} (" in str(e.value)
    assert str(e.value).endswith("use fewer pairs")
    with pytest.raises(ValueError, match=r"fine-tune on fewer examples$"):
        read_jsonl(p)
    monkeypatch.setattr(memory, "available", lambda: (10 * need, need))
    assert len(read_jsonl(p)) == 100


def test_a_directory_is_not_a_data_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"^data file '{tmp_path}' is a directory"):
        read_jsonl(tmp_path)
    with pytest.raises(FileNotFoundError, match="check the --data path"):
        read_jsonl(tmp_path / "absent.jsonl")


def test_write_jsonl_bytes(tmp_path: Path) -> None:
    out = write_jsonl(tmp_path / "w.jsonl", [Example("é", "✓"), Example("a\n", "")])
    assert out == tmp_path / "w.jsonl"
    assert (
        out.read_bytes()
        == ('{"prompt": "é", "response": "✓"}\n{"prompt": "a\\n", "response": ""}\n').encode()
    )


# --------------------------------------------------------------------------------------------
# Batches, the split, the order, the steps


def test_pad_batch_exactly() -> None:
    x, y = pad_batch([([1, 2, 3, 4, 5], 2), ([6, 7, 8], 1), ([9, 10], 1)], pad_id=0)
    assert x.dtype == np.int64 and y.dtype == np.int64
    assert x.tolist() == [[1, 2, 3, 4], [6, 7, 0, 0], [9, 0, 0, 0]]
    assert y.tolist() == [[-1, 3, 4, 5], [7, 8, -1, -1], [10, -1, -1, -1]]
    x, y = pad_batch([([4, 5, 6], 2)], pad_id=7)
    assert x.tolist() == [[4, 5]] and y.tolist() == [[-1, 6]]


def test_split_examples_against_its_definition() -> None:
    items = list(range(20))
    for seed, fraction in [(0, 0.1), (3, 0.25), (7, 0.5), (1, 0.96)]:
        train, val = split_examples(items, fraction, seed)
        n_val = max(1, round(20 * fraction))
        chosen = np.random.default_rng([seed, STREAM_SPLIT]).permutation(20)[:n_val]
        assert val == sorted(chosen.tolist())
        assert train == [i for i in items if i not in val]
    assert split_examples([5, 6], 0.01, 0) in [([5], [6]), ([6], [5])]  # at least one
    for fraction in [0.0, 1.0, -0.5, 1.5]:
        with pytest.raises(ValueError) as e:
            split_examples(items, fraction, 0)
        assert str(e.value) == (f"val_fraction must be between 0 and 1 (exclusive), got {fraction}")
    for n, fraction in [(1, 0.5), (2, 0.75), (4, 0.9)]:
        with pytest.raises(DataError) as d:
            split_examples(list(range(n)), fraction, 0)
        assert str(d.value) == (
            f"{n} example(s) cannot be split into training and validation "
            f"(val_fraction={fraction}); give more examples"
        )
    assert len(split_examples(list(range(4)), 0.6, 0)[1]) == 2  # round(2.4) = 2 < 4


def test_batch_indices_against_its_definition() -> None:
    n, size, seed = 7, 3, 5
    orders = [np.random.default_rng([seed, STREAM_ORDER, e]).permutation(n) for e in range(4)]
    stream = np.concatenate(orders)
    for step in range(8):
        got = batch_indices(n, size, step, seed)
        assert got.dtype == np.int64 and got.shape == (size,)
        assert got.tolist() == stream[step * size : (step + 1) * size].tolist()
    assert batch_indices(2, 5, 0, 1).tolist() == [
        *np.random.default_rng([1, STREAM_ORDER, 0]).permutation(2),
        *np.random.default_rng([1, STREAM_ORDER, 1]).permutation(2),
        np.random.default_rng([1, STREAM_ORDER, 2]).permutation(2)[0],
    ]


def test_count_steps() -> None:
    assert count_steps(5, 3.0, 10, 4) == 5
    assert count_steps(0, 3.0, 10, 4) == math.ceil(30 / 4) == 8
    assert count_steps(0, 1.0, 8, 4) == 2
    assert count_steps(0, 0.01, 10, 4) == 1
    with pytest.raises(ValueError) as e:
        count_steps(0, 0.0, 10, 4)
    assert str(e.value) == "epochs must be positive when steps is 0"
    assert count_steps(3, 0.0, 10, 4) == 3
    for args, message in [
        ((-1, 1.0, 10, 4), "steps must be a whole number >= 0, got -1"),
        ((0, -1.0, 10, 4), "epochs must be a finite number >= 0, got -1.0"),
        ((0, math.inf, 10, 4), "epochs must be a finite number >= 0, got inf"),
        ((0, 1.0, 0, 4), "n_train must be a whole number >= 1, got 0"),
        ((0, 1.0, 10, 0), "batch_size must be a whole number >= 1, got 0"),
    ]:
        with pytest.raises(ValueError) as e:
            count_steps(*args)
        assert str(e.value) == message


# --------------------------------------------------------------------------------------------
# The configuration's checks


def _cfg(**changes: object) -> FinetuneConfig:
    return FinetuneConfig(**{"data": "d.jsonl", "out": "run", **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"data": ""}, ValueError, "data"),
        ({"out": ""}, ValueError, "out"),
        ({"model": ""}, ValueError, "model"),
        ({"template": "{prompt}"}, ValueError, "template must contain"),
        ({"steps": -1}, ValueError, "steps must be a whole number >= 0, got -1"),
        ({"batch_size": 0}, ValueError, "batch_size must be a whole number >= 1, got 0"),
        ({"warmup": -1}, ValueError, "warmup must be a whole number >= 0, got -1"),
        ({"eval_every": -1}, ValueError, "eval_every must be a whole number >= 0, got -1"),
        ({"seed": -1}, ValueError, "seed must be a whole number >= 0, got -1"),
        ({"seed": 1.0}, TypeError, "seed must be a whole number, got float 1.0"),
        ({"save_every": 0}, ValueError, "save_every must be a whole number >= 1, got 0"),
        ({"steps": 4, "warmup": 5}, ValueError, r"warmup \(5\) must not exceed steps \(4\)"),
        ({"lr": -1.0}, ValueError, "lr must be a finite number >= 0, got -1.0"),
        ({"epochs": math.nan}, ValueError, "epochs must be a finite number >= 0, got nan"),
        ({"lr": 0.0}, ValueError, r"lr and epochs \(when steps is 0\) must be positive"),
        ({"epochs": 0.0}, ValueError, r"lr and epochs \(when steps is 0\) must be positive"),
        ({"val_fraction": 0.0}, ValueError, r"val_fraction must be in \(0, 1\), got 0.0"),
        ({"val_fraction": 1.0}, ValueError, r"val_fraction must be in \(0, 1\), got 1.0"),
        ({"dtype": "float16"}, ValueError, "dtype must be 'float32' or 'float64'"),
    ],
)
def test_finetune_config_refuses(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _cfg(**changes)


def test_finetune_config_accepts_its_edges() -> None:
    _cfg(steps=4, warmup=4, save_every=1, model="gpt2")
    _cfg(steps=0, warmup=100)  # warmup is only compared with an explicit step count
    _cfg(steps=3, epochs=0.0)
    _cfg(batch_size=1, eval_every=0, seed=0, val_fraction=0.999, dtype="float64")
