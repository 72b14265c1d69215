"""The built-in model: it ships in the package, loads offline, writes Shakespeare-like text, and
meets its quality target on the held-out 10% of Tiny Shakespeare."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numpylm
from numpylm.cli import main
from numpylm.io.loading import BUILTIN_DIR
from numpylm.training.data import split_text
from numpylm.training.train import evaluate

pytestmark = pytest.mark.skipif(
    not (BUILTIN_DIR / "model.safetensors").is_file(), reason="the built-in model is not built"
)


@pytest.fixture(scope="module")
def builtin() -> tuple[numpylm.GPT, numpylm.Tokenizer]:
    return numpylm.load()


def test_load_gives_the_model_and_its_own_tokenizer(
    builtin: tuple[numpylm.GPT, numpylm.Tokenizer],
) -> None:
    model, tokenizer = builtin
    assert model.dtype == np.float32  # stored as float16, computed in float32
    assert tokenizer.n_vocab == model.config.vocab_size
    assert tokenizer.decode(tokenizer.encode("ROMEO: O, she doth teach")) == (
        "ROMEO: O, she doth teach"
    )


def test_generate_without_model_runs_offline_in_a_fresh_process(tmp_path: Path) -> None:
    # No network and an empty tiktoken cache: nothing may be fetched.
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "numpylm", "generate", "ROMEO:", "-n", "40", "--seed", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:")
    assert len(result.stdout) > len("ROMEO:") + 40  # 40 tokens of 2.5 characters or so


def test_same_seed_same_text_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for seed in ("1", "1", "2"):
        assert main(["generate", "JULIET:", "-n", "20", "--seed", seed, "--no-stream"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]


def test_writes_shakespeare_words(
    builtin: tuple[numpylm.GPT, numpylm.Tokenizer], shakespeare: Path
) -> None:
    """Independent of the model: nearly every word it writes occurs in Shakespeare's text,
    which a random or broken model would not manage."""
    model, tokenizer = builtin
    words_of = re.compile(r"[A-Za-z']+").findall
    vocabulary = set(words_of(shakespeare.read_text(encoding="utf-8")))
    text = numpylm.complete(model, tokenizer, "ROMEO:", max_new_tokens=200, temperature=0.8, seed=0)
    words = words_of(text)
    assert len(words) >= 50
    known = sum(w in vocabulary for w in words) / len(words)
    assert known >= 0.9, (known, text)


def test_meets_the_quality_target_on_the_validation_text(
    builtin: tuple[numpylm.GPT, numpylm.Tokenizer], shakespeare: Path
) -> None:
    """Validation loss <= 1.60 nats per character on the last 10% of Tiny Shakespeare (the
    text the model never trained on), the figure the model card reports."""
    model, tokenizer = builtin
    _, val_text = split_text(shakespeare.read_text(encoding="utf-8"))
    result = evaluate(model, tokenizer, val_text)
    assert result["nats_per_char"] <= 1.60, result
    assert result["perplexity"] == pytest.approx(np.exp(result["loss"]))
