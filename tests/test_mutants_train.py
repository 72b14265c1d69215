"""Training's run configuration, word for word: ``TrainConfig``'s checks, the model shape it
names, the tokenizer spec and ``resume_config`` for training and fine-tuning (for the mutants
of ``training/train.py``'s and ``training/finetune.py``'s bookkeeping; docs/reliability.md,
"Mutation testing")."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from numpylm.training import align as align_module
from numpylm.training import finetune as finetune_module
from numpylm.training import train as train_module
from numpylm.training.train import TrainConfig, parse_tokenizer_spec, resume_config


def _cfg(**changes: Any) -> TrainConfig:
    return TrainConfig(**{"data": "d.txt", "out": "run", **changes})


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"data": ""}, ValueError, "data"),
        ({"out": ""}, ValueError, "out"),
        ({"tokenizer": "bpe:256"}, ValueError, "SIZE in bpe:SIZE"),
        ({"config": "huge"}, ValueError, "huge"),
        ({"n_layer": 0}, ValueError, "n_layer must be a whole number >= 1, got 0"),
        ({"n_head": 0}, ValueError, "n_head must be a whole number >= 1, got 0"),
        ({"n_embd": 0}, ValueError, "n_embd must be a whole number >= 1, got 0"),
        ({"n_ctx": 0}, ValueError, "n_ctx must be a whole number >= 1, got 0"),
        ({"save_every": 0}, ValueError, "save_every must be a whole number >= 1, got 0"),
        ({"n_layer": 2.0}, TypeError, "n_layer must be a whole number, got float 2.0"),
        ({"steps": 0}, ValueError, "steps must be a whole number >= 1, got 0"),
        ({"batch_size": 0}, ValueError, "batch_size must be a whole number >= 1, got 0"),
        ({"eval_every": 0}, ValueError, "eval_every must be a whole number >= 1, got 0"),
        ({"threads": 0}, ValueError, "threads must be a whole number >= 1, got 0"),
        ({"warmup": -1}, ValueError, "warmup must be a whole number >= 0, got -1"),
        ({"eval_batches": -1}, ValueError, "eval_batches must be a whole number >= 0, got -1"),
        ({"seed": -1}, ValueError, "seed must be a whole number >= 0, got -1"),
        ({"lr": 0.0}, ValueError, "^lr must be positive, got 0$"),
        ({"lr": math.inf}, ValueError, "lr must be a finite number >= 0, got inf"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay must be a finite number >= 0"),
        ({"grad_clip": math.nan}, ValueError, "grad_clip must be a finite number >= 0"),
        ({"min_lr": math.nan}, ValueError, "min_lr must be a finite number >= 0, got nan"),
        ({"min_lr": 0.01, "lr": 0.001}, ValueError, r"min_lr \(0.01\) must not exceed lr"),
        ({"dtype": "float16"}, ValueError, "dtype must be 'float32' or 'float64', got 'float16'"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"n_head": 3}, ValueError, "n_head"),  # 3 does not divide mini's 128
    ],
)
def test_train_config_refuses(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _cfg(**changes)


def test_train_config_accepts_its_edges() -> None:
    _cfg(n_layer=1, n_head=1, n_embd=1, n_ctx=1, save_every=1, steps=1, batch_size=1, eval_every=1)
    _cfg(threads=1, warmup=0, eval_batches=0, seed=0, min_lr=0.001, lr=0.001, dtype="float64")
    _cfg(config="gpt2", tokenizer="gpt2", weight_decay=0.0, grad_clip=0.0, dropout=0.5)


def test_model_config_applies_the_overrides() -> None:
    c = _cfg(config="tiny").model_config(500)
    assert (c.vocab_size, c.n_layer, c.n_head, c.n_embd, c.n_ctx) == (500, 2, 2, 64, 64)
    c = _cfg(config="small", n_layer=1, n_head=2, n_embd=32, n_ctx=16).model_config(300)
    assert (c.vocab_size, c.n_layer, c.n_head, c.n_embd, c.n_ctx) == (300, 1, 2, 32, 16)
    c = _cfg(config="gpt2", n_layer=1).model_config(1000)
    assert (c.vocab_size, c.n_layer, c.n_head, c.n_embd, c.n_ctx) == (1000, 1, 12, 768, 1024)


def test_parse_tokenizer_spec(tmp_path: Path) -> None:
    assert parse_tokenizer_spec("gpt2") == ("gpt2", None)
    assert parse_tokenizer_spec("bpe:257") == ("bpe", 257)
    assert parse_tokenizer_spec("bpe:1024") == ("bpe", 1024)
    assert parse_tokenizer_spec(str(tmp_path)) == ("dir", None)
    for spec in ["bpe:256", "bpe:", "bpe:-300", "bpe:1e3", "bpe:x"]:
        with pytest.raises(ValueError) as e:
            parse_tokenizer_spec(spec)
        assert str(e.value) == (
            f"tokenizer {spec!r}: SIZE in bpe:SIZE must be a whole number >= 257 "
            "(256 bytes + <|endoftext|>), e.g. bpe:1024"
        )
    for spec in ["", "GPT2", "bpe", str(tmp_path / "absent"), "Bpe:300"]:
        with pytest.raises(ValueError) as e:
            parse_tokenizer_spec(spec)
        assert str(e.value) == (
            "tokenizer must be 'gpt2', 'bpe:SIZE' or a directory with vocab.json and "
            f"merges.txt, got {spec!r}"
        )


def test_resume_config_keeps_known_fields_applies_changes_and_the_new_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved = {"data": "d.txt", "out": "old", "steps": 7, "seed": 3, "gone": 1, "lr": 0.002}
    asked: list[tuple[str, str]] = []

    def saved_args(out: str, kind: str) -> dict[str, Any]:
        asked.append((out, kind))
        return dict(saved)

    monkeypatch.setattr(train_module, "saved_args", saved_args)
    cfg = resume_config(Path("new"), steps=20)
    assert asked == [(Path("new"), "train")]
    assert (cfg.out, cfg.data, cfg.steps, cfg.seed, cfg.lr) == ("new", "d.txt", 20, 3, 0.002)
    saved.update(template="Q {prompt} A {response}", epochs=2.0, steps=0, out="old2")
    monkeypatch.setattr(finetune_module, "saved_args", saved_args)
    ft = finetune_module.resume_config("ft", epochs=4.0)
    assert asked[-1] == ("ft", "finetune")
    assert (ft.out, ft.data, ft.epochs, ft.seed, ft.template) == (
        "ft",  # the directory resumed, never the path recorded when the run began
        "d.txt",
        4.0,
        3,
        "Q {prompt} A {response}",
    )
    saved.update(template=None, out="old3")
    monkeypatch.setattr(align_module, "saved_args", saved_args)
    al = align_module.resume_config(Path("al"), beta=0.5)
    assert asked[-1] == (Path("al"), "align")
    assert (al.out, al.data, al.beta, al.seed) == ("al", "d.txt", 0.5, 3)
