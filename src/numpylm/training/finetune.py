"""Supervised fine-tuning (SFT): teaching a language model to answer, and to stop.

A pretrained model only continues text. Asked "Count from 3 to 7.", a model trained on
Shakespeare writes more Shakespeare. Fine-tuning shows it many examples of the behaviour we
want, each a prompt and its response, written with one fixed template:

    Question: Count from 3 to 7.
    Answer: 3 4 5 6 7<|endoftext|>
    |---- prompt: read, not scored ----|-- response: scored --|

It is the same next-token training as pretraining (the objective ``train.NextToken``, the loop
``train.run_steps``, AdamW, checkpoints), with two differences:

1. The loss counts the response tokens only: a prompt position's target is -1, which
   ``GPT.loss_and_grads`` skips. The model is not taught to write questions, only answers.
2. Every response ends with ``<|endoftext|>`` (``tokenizer.eot_id``, appended as an id: the
   tokenizer reads the text "<|endoftext|>" as plain characters), so the model learns where an
   answer ends and generation can stop there.

Generation then asks in the taught format: ``format_prompt`` writes the prompt part, and the
model continues with the answer. The fine-tuned model's directory records its template in
``prompt_template.json``, so ``numpylm generate --model DIR "Count from 3 to 7."`` wraps the
question itself and stops at ``<|endoftext|>``.

Examples of different lengths are batched by padding on the right: the padding's targets are
-1 too, and causal attention means no real token ever looks at the padding after it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import checks, memory
from ..generation.batching import generate_batch
from ..io import checkpoint
from ..io.checkpoint import CheckpointError
from ..io.loading import load, model_dir
from ..models.family import LanguageModel
from ..models.gpt2.model import GPT, param_shapes
from ..tokens.tokenizer import Tokenizer
from .optim import AdamW
from .runs import (
    STREAM_ORDER,
    STREAM_SPLIT,
    TEMPLATE_FILE,
    Checkpoint,
    open_run,
    outlive_output,
    save_checkpoint,
    saved_args,
    sha256_file,
)
from .train import NextToken, TrainResult, check_optimisation, run_steps

TEMPLATE = "Question: {prompt}\nAnswer: {response}"
"""The default prompt template. Everything before ``{response}`` is the prompt part, except the
whitespace right before it: that belongs to the response, as a GPT-2 tokenizer attaches a space
to the word after it (" 3" is the answer's first token, not "Answer: ")."""

FROZEN_BY_FREEZE_EMBEDDINGS = ("wte.weight", "wpe.weight")


E = TypeVar("E")  # an example, or a preference pair: what a data file holds a line of


class DataError(ValueError):
    """A fine-tuning data file is unusable; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One prompt and the response the model should learn to give."""

    prompt: str
    response: str


# --------------------------------------------------------------------------------------------
# The prompt template


def split_template(template: str) -> tuple[str, str]:
    """``template`` -> (prompt part, response part), e.g. ``TEMPLATE`` ->
    ("Question: {prompt}\\nAnswer:", " {response}").

    Raises:
        ValueError: the template does not hold ``{prompt}`` once, then ``{response}`` once at
            its very end (the end-of-text token follows the response).
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    if (
        template.count("{prompt}") != 1
        or template.count("{response}") != 1
        or not template.endswith("{response}")
        or template.index("{prompt}") > template.index("{response}")
    ):
        raise ValueError(
            f"template must contain {{prompt}} once and end with {{response}}, e.g. "
            f"{TEMPLATE!r}; got {template!r}"
        )
    head = template.removesuffix("{response}")
    prompt_part = head.rstrip()
    return prompt_part, head[len(prompt_part) :] + "{response}"


def format_prompt(prompt: str, template: str = TEMPLATE) -> str:
    """The text a model is given to answer ``prompt``: ``"Question: {prompt}\\nAnswer:"``."""
    return split_template(template)[0].replace("{prompt}", prompt)


def format_response(response: str, template: str = TEMPLATE) -> str:
    """The text the model should write after ``format_prompt``: ``" " + response``."""
    return split_template(template)[1].replace("{response}", response)


def format_example(prompt: str, response: str, template: str = TEMPLATE) -> str:
    """The whole example as text (without the end-of-text token that follows it)."""
    return format_prompt(prompt, template) + format_response(response, template)


def encode_example(
    tokenizer: Tokenizer, example: Example, template: str = TEMPLATE
) -> tuple[list[int], int]:
    """An example as token ids, and how many of them are the prompt.

    Returns:
        ``(ids, n_prompt)``: ``ids`` is the prompt's ids, then the response's, then
        ``eot_id``; the first ``n_prompt`` are the prompt. The two parts are encoded apart,
        exactly as generation sees them: the prompt as given, the answer as produced.
        An empty prompt part becomes ``[eot_id]`` (GPT-2's start of text), as in generation.
    """
    prompt_ids = tokenizer.encode(format_prompt(example.prompt, template)) or [tokenizer.eot_id]
    response_ids = tokenizer.encode(format_response(example.response, template))
    return prompt_ids + response_ids + [tokenizer.eot_id], len(prompt_ids)


def load_template(name_or_path: str | os.PathLike[str]) -> str | None:
    """The template recorded in a fine-tuned model's directory, or None (not a local
    directory, or not fine-tuned with numpylm)."""
    path = Path(model_dir(name_or_path)) / TEMPLATE_FILE
    if not os.path.lexists(path):  # anything under the name is read, or refused as a file
        return None
    template = checkpoint.read_json(path).get("template")
    try:
        split_template(template)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    return str(template)


# --------------------------------------------------------------------------------------------
# Data: JSON Lines


def read_jsonl(path: str | os.PathLike[str]) -> list[Example]:
    """Read fine-tuning examples, one JSON object ``{"prompt": ..., "response": ...}`` a line
    (blank lines are skipped).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the path is a directory, a pipe or a device, not a file.
        ValueError: the file would not fit in memory (``memory.text_bytes``).
        DataError: the file holds no example, or bad lines: each is reported as
            ``FILE:LINE: reason`` (at most 10 of them).
    """
    return [Example(*values) for values in read_records(path, ("prompt", "response"))]


def read_records(
    path: str | os.PathLike[str],
    keys: Sequence[str],
    check: Callable[[tuple[str, ...]], None] | None = None,
    *,
    fewer: str = "fine-tune on fewer examples",
) -> list[tuple[str, ...]]:
    """Read a JSON Lines file whose every line is an object of exactly ``keys``, each a string
    (blank lines are skipped): one tuple of the values, in the order of ``keys``, a line.
    ``check(values)``, if given, raises ValueError for a line whose values are unusable
    together. ``read_jsonl`` and ``align.read_pairs`` read their files with it. ``fewer`` is
    the advice given when the file would not fit in memory.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the path is a directory, a pipe or a device, not a file.
        ValueError: the file would not fit in memory (``memory.text_bytes``).
        DataError: the file holds no record, or bad lines: each is reported as
            ``FILE:LINE: reason`` (at most 10 of them).
    """
    p = Path(path)
    n = checkpoint.regular_file(p, "data file", "check the --data path")
    memory.fits(
        memory.text_bytes(n),  # the bytes, the lines, the records and their token ids
        f"reading and tokenising {p} ({memory.size(n)})",
        fewer,
    )
    shape = "{" + ", ".join(f'"{k}": "..."' for k in keys) + "}"
    records: list[tuple[str, ...]] = []
    problems: list[str] = []
    n_bad = 0
    for number, line in enumerate(p.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            values = _parse_line(line, keys)
            if check is not None:
                check(values)
            records.append(values)
        except ValueError as e:
            n_bad += 1
            if len(problems) < 10:
                problems.append(f"{p}:{number}: {e}")
    if n_bad:
        more = f"\n(and {n_bad - len(problems)} more)" if n_bad > len(problems) else ""
        raise DataError(
            f"{n_bad} bad line{'s' if n_bad > 1 else ''} in {p}; each line must be a JSON "
            f"object {shape}:\n" + "\n".join(problems) + more
        )
    if not records:
        raise DataError(
            f"{p} holds no examples (it is empty); write one JSON object {shape} a line"
        )
    return records


def _parse_line(line: bytes, keys: Sequence[str]) -> tuple[str, ...]:
    """One line of a JSONL file -> the values of ``keys``; ValueError says what is wrong."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:  # Python's parser recurses once per nested array or object
        raise ValueError("invalid JSON (arrays or objects nested too deeply to read)") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise ValueError(f"invalid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {_json_kind(obj)}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError("missing key " + " and ".join(repr(k) for k in missing))
    extra = sorted(set(obj) - set(keys))
    if extra:
        allowed = ", ".join(repr(k) for k in keys[:-1]) + f" and {keys[-1]!r}"
        raise ValueError(
            "unexpected key " + ", ".join(repr(k) for k in extra) + f" (only {allowed} are allowed)"
        )
    for key in keys:
        if not isinstance(obj[key], str):
            raise ValueError(f"{key!r} must be a string, got {_json_kind(obj[key])}")
    return tuple(obj[k] for k in keys)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def write_jsonl(path: str | os.PathLike[str], examples: Iterable[Example]) -> Path:
    """Write examples as JSON Lines (UTF-8, one object a line), atomically."""
    lines = [
        json.dumps({"prompt": e.prompt, "response": e.response}, ensure_ascii=False) + "\n"
        for e in examples
    ]
    out = Path(path)
    checkpoint.atomic_write_bytes(out, "".join(lines).encode("utf-8"))
    return out


# --------------------------------------------------------------------------------------------
# Batches


def pad_batch(
    rows: Sequence[tuple[Sequence[int], int]], pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Encoded examples (``encode_example``'s ``(ids, n_prompt)``) -> one right-padded batch.

    Returns:
        x: (B, T) int64 inputs, ``ids[:-1]`` then ``pad_id``; T is the longest ``len(ids) - 1``.
        y: (B, T) int64 targets, ``ids[1:]`` where a response token is predicted, -1 at the
            prompt (the targets ``ids[1:n_prompt]``) and at the padding.
    """
    T = max(len(ids) for ids, _ in rows) - 1
    x = np.full((len(rows), T), pad_id, dtype=np.int64)
    y = np.full((len(rows), T), -1, dtype=np.int64)
    for b, (ids, n_prompt) in enumerate(rows):
        n = len(ids) - 1
        x[b, :n] = ids[:-1]
        # position t predicts ids[t + 1]; the response starts at ids[n_prompt]
        y[b, n_prompt - 1 : n] = ids[n_prompt:]
    return x, y


def split_examples(
    examples: Sequence[E], val_fraction: float, seed: int
) -> tuple[list[E], list[E]]:
    """A random (seeded) ``val_fraction`` of the examples for validation, at least one; the
    rest for training, in their original order."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_val = max(1, round(len(examples) * val_fraction))
    if n_val >= len(examples):
        raise DataError(
            f"{len(examples)} example(s) cannot be split into training and validation "
            f"(val_fraction={val_fraction}); give more examples"
        )
    is_val = np.zeros(len(examples), dtype=bool)
    is_val[np.random.default_rng([seed, STREAM_SPLIT]).permutation(len(examples))[:n_val]] = True
    train = [e for e, v in zip(examples, is_val, strict=True) if not v]
    val = [e for e, v in zip(examples, is_val, strict=True) if v]
    return train, val


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Which of ``n`` training examples make up the batch of ``step``: (batch_size,) int64.

    The examples are visited epoch after epoch, each epoch in its own seeded random order, and
    batch ``step`` is the next ``batch_size`` of that stream. It is a function of ``step``
    alone, so a resumed run trains on exactly the batches it would have.
    """
    i = np.arange(step * batch_size, (step + 1) * batch_size)  # positions in the stream
    epochs = i // n
    out = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):
        order = np.random.default_rng([seed, STREAM_ORDER, int(e)]).permutation(n)
        out[epochs == e] = order[i[epochs == e] % n]
    return out


# --------------------------------------------------------------------------------------------
# Fine-tuning


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run needs (``numpylm finetune`` has one flag per field).

    Attributes:
        data: a JSON Lines file of ``{"prompt": ..., "response": ...}`` objects.
        out: the run directory: a model directory at every moment, as in ``train``, plus
            ``prompt_template.json``.
        model: the model to start from: a numpylm or Hugging Face model directory, a Hub id
            such as ``gpt2``, or None for the built-in Shakespeare model.
        template: the prompt template (see ``TEMPLATE``).
        steps: optimiser steps in total; 0 runs ``epochs`` passes over the training examples.
        epochs: passes over the training examples when ``steps`` is 0 (may be fractional).
        batch_size: examples per step.
        lr: the peak learning rate (fine-tuning wants a smaller one than pretraining).
        min_lr: the learning rate at the end of the cosine decay (default ``lr / 10``).
        warmup: steps of linear learning-rate warm-up.
        weight_decay: AdamW's decoupled weight decay.
        grad_clip: clip the global gradient norm to this (0 turns clipping off).
        eval_every: validation loss every this many steps; 0 evaluates 10 times in the run.
        save_every: a checkpoint every this many steps (default ``eval_every``) and at the end.
        val_fraction: the share of the examples held out for the validation loss (at least
            one example).
        freeze_embeddings: train everything but the token and position embeddings. GPT-2 ties
            the output layer to the token embedding, so that stays as it was too.
        seed: seeds the validation split, the batch order and the dropout masks.
        dtype: ``float32`` or ``float64``.
        dropout: the dropout rate of the training steps, in ``[0, 1)`` (see
            ``GPT.loss_and_grads``); 0, the default, turns it off. Validation never drops.
    """

    data: str
    out: str
    model: str | None = None
    template: str = TEMPLATE
    steps: int = 0
    epochs: float = 3.0
    batch_size: int = 16
    lr: float = 3e-4
    min_lr: float | None = None
    warmup: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 0
    save_every: int | None = None
    val_fraction: float = 0.1
    freeze_embeddings: bool = False
    seed: int = 0
    dtype: str = "float32"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        checks.path("data", self.data)
        checks.path("out", self.out)
        if self.model is not None:
            checks.path("model", self.model)
        split_template(self.template)
        for name, low in (("steps", 0), ("batch_size", 1), ("warmup", 0), ("eval_every", 0)):
            checks.whole_number(name, getattr(self, name), low)
        checks.whole_number("seed", self.seed, 0)
        if self.save_every is not None:
            checks.whole_number("save_every", self.save_every, 1)
        if self.steps and self.warmup > self.steps:
            raise ValueError(f"warmup ({self.warmup}) must not exceed steps ({self.steps})")
        check_optimisation(self)
        checks.finite_number("epochs", self.epochs)
        if self.lr == 0 or (self.steps == 0 and self.epochs == 0):
            raise ValueError("lr and epochs (when steps is 0) must be positive")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")


def finetune(
    cfg: FinetuneConfig, *, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> TrainResult:
    """Fine-tune ``cfg.model`` on the prompt/response pairs in ``cfg.data``, checkpointing to
    ``cfg.out`` (the loop is ``train.run_steps``; checkpoints, Ctrl-C and resume are ``runs``').

    With ``resume``, continue the run saved in ``cfg.out`` exactly where it stopped. A new run
    never overwrites anything in ``cfg.out``, nor writes into the model it reads; ``overwrite``
    first deletes a numpylm run there, and refuses files numpylm did not write
    (``runs.open_run``). If standard output or error goes away, the run goes on silently
    (``runs.outlive_output``).

    Raises:
        DataError: a bad data file (see ``read_jsonl``), or no example fits the context.
        TrainingDiverged: the loss, the gradient or the weights became NaN or infinite.
        CheckpointError: ``resume`` without a usable checkpoint, a fresh run into a directory
            that holds a run or other files, or a directory another run is writing.
    """
    out = Path(cfg.out)
    examples = read_jsonl(cfg.data)
    sha = sha256_file(Path(cfg.data))
    base = model_dir(cfg.model)
    with (
        outlive_output(),
        open_run(
            out,
            "finetune",
            resume=resume,
            data_sha256=sha,
            data=cfg.data,
            dtype=cfg.dtype,
            overwrite=overwrite,
            reads=[cfg.data, None if resume else base],
        ) as run,
    ):
        return _finetune(cfg, run, examples, sha, progress)


def _finetune(
    cfg: FinetuneConfig, run: Checkpoint | None, examples: list[Example], sha: str, progress: bool
) -> TrainResult:
    """``finetune``, once the run directory is open (and locked): ``run`` is the checkpoint to
    resume, or None for a new run."""
    out = Path(cfg.out)
    if run is not None:
        model, tokenizer = run.model, run.tokenizer
    else:
        model, tokenizer = load_base(cfg.model, cfg.dtype)
    step, losses, history = (run.step, run.losses, run.history) if run else (0, [], [])
    elapsed = run.elapsed if run else 0.0

    train_examples, val_examples = split_examples(examples, cfg.val_fraction, cfg.seed)
    train_rows = encode_all(tokenizer, train_examples, cfg.template, model.config.n_ctx, cfg.data)
    val_rows = encode_all(tokenizer, val_examples, cfg.template, model.config.n_ctx, cfg.data)
    steps = count_steps(cfg.steps, cfg.epochs, len(train_rows), cfg.batch_size)
    plan = dataclasses.replace(
        cfg,
        steps=steps,
        warmup=min(cfg.warmup, steps),
        eval_every=cfg.eval_every or max(1, steps // 10),
    )

    c = model.config  # a batch is padded to its longest example: the longest is the bound
    longest = max(len(ids) for ids, _ in train_rows + val_rows)
    memory.fits(
        memory.training_bytes(
            c.vocab_size,
            longest,
            c.n_layer,
            c.n_head,
            c.n_embd,
            batch_size=cfg.batch_size,
            itemsize=model.dtype.itemsize,
            steps=steps,
        ),
        f"fine-tuning {model.num_params():,} parameters on batches of {cfg.batch_size} "
        f"examples of up to {longest} tokens for {steps:,} steps",
        "use a smaller --batch-size or fewer --steps (or a smaller model)",
    )
    frozen = FROZEN_BY_FREEZE_EMBEDDINGS if cfg.freeze_embeddings else ()
    # In the config's order, whatever order the file had: the gradient norm sums the tensors'
    # shares in this order, and a resumed run must add them up exactly as the first one did.
    trainable = {k: model.params[k] for k in param_shapes(model.config) if k not in frozen}
    optimizer = AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if run is not None:
        optimizer.load_state_dict(run.optimizer_state)
    else:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(out / TEMPLATE_FILE, {"template": cfg.template})

    pad = tokenizer.eot_id

    def next_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
        pick = batch_indices(len(train_rows), cfg.batch_size, step, cfg.seed)
        return pad_batch([train_rows[i] for i in pick], pad)

    def validate() -> dict[str, float]:
        return {"val_loss": answer_loss(model, val_rows, cfg.batch_size, pad)}

    def save(at: int) -> None:
        args = {**dataclasses.asdict(plan), "data": str(Path(cfg.data).resolve())}
        save_checkpoint(
            out,
            model,
            tokenizer,
            optimizer,
            {
                "kind": "finetune",
                "step": at,
                "args": args,
                "data_sha256": sha,
                "dtype": str(model.dtype),
                "elapsed": elapsed + (time.perf_counter() - started),
                "history": history,
                "losses": losses,
            },
        )

    if progress:
        from tqdm import tqdm

        n_train_tokens = sum(len(ids) - n for ids, n in train_rows)
        tqdm.write(
            f"model: {model!r}\n"
            f"data: {len(train_rows):,} training examples ({n_train_tokens:,} response tokens), "
            f"{len(val_rows):,} validation; {plan.batch_size} examples per step, "
            f"{steps * plan.batch_size / len(train_rows):.2f} epochs"
            + (f"; frozen: {', '.join(frozen)}" if frozen else "")
            + f"\n{'resuming at' if run else 'starting at'} step {step} of {steps} in {out}"
        )
    started = time.perf_counter()
    return run_steps(
        optimizer,
        plan,
        NextToken(model, next_batch, cfg.dropout, cfg.seed),
        validate,
        save,
        out=out,
        step=step,
        losses=losses,
        history=history,
        progress=progress,
    )


def answer_loss(
    model: GPT, rows: Sequence[tuple[list[int], int]], batch_size: int, pad_id: int
) -> float:
    """The mean loss per response token of encoded examples (``encode_example``'s rows), in
    batches of ``batch_size``: fine-tuning's validation loss."""
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        x, y = pad_batch(rows[i : i + batch_size], pad_id)
        n = int((y >= 0).sum())
        total += model.loss(x, y) * n  # mean -> sum, so the result is per response token
        count += n
    return total / count


def resume_config(out: str | os.PathLike[str], **changes: Any) -> FinetuneConfig:
    """The ``FinetuneConfig`` a run in ``out`` was started with, with ``changes`` applied (for
    example ``steps=500`` to train longer)."""
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    kept = {k: v for k, v in saved_args(out, "finetune").items() if k in known}
    return FinetuneConfig(**{**kept, **changes, "out": os.fspath(out)})  # never the old path


def load_base(name: str | None, dtype: str) -> tuple[GPT, Tokenizer]:
    """The model a run starts from (``numpylm.load``), in ``dtype``."""
    model, tokenizer = load(name)
    if not isinstance(model, GPT):
        raise CheckpointError(
            f"{name}: numpylm fine-tunes GPT-2 models only; this is a Llama-family model"
        )
    if str(model.dtype) != dtype:
        model = GPT(model.config, dtype=np.dtype(dtype), params=model.params)
    return model, tokenizer


def count_steps(steps: int, epochs: float, n_train: int, batch_size: int) -> int:
    """A run's optimiser steps: ``steps``, or when it is 0, enough for ``epochs`` passes over
    ``n_train`` examples in batches of ``batch_size`` (at least one step)."""
    checks.whole_number("steps", steps, 0)
    checks.finite_number("epochs", epochs)
    checks.whole_number("n_train", n_train, 1)
    checks.whole_number("batch_size", batch_size, 1)
    if steps == 0 and epochs == 0:
        raise ValueError("epochs must be positive when steps is 0")
    return steps or max(1, math.ceil(epochs * n_train / batch_size))


def encode_all(
    tokenizer: Tokenizer, examples: Sequence[Example], template: str, n_ctx: int, source: str
) -> list[tuple[list[int], int]]:
    """Encode examples, leaving out those longer than the context (a cut-off example would
    never show where its answer ends)."""
    rows = [encode_example(tokenizer, e, template) for e in examples]
    fitting = [r for r in rows if len(r[0]) - 1 <= n_ctx]
    if not fitting:
        raise DataError(
            f"no example of {source} fits the model's context of {n_ctx} tokens; shorten them"
        )
    if len(fitting) < len(rows):
        print(
            f"numpylm: skipped {len(rows) - len(fitting)} of {len(rows)} examples longer than "
            f"the context of {n_ctx} tokens",
            file=sys.stderr,
        )
    return fitting


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class SFTScore:
    """How a model answered examples (``evaluate_sft``), one entry per example.

    Attributes:
        answers: the generated answer texts: what came before ``<|endoftext|>``, or all of it
            when it never came.
        stopped: whether each answer ended with ``<|endoftext|>``.
        expected: the responses the examples give.
    """

    answers: list[str]
    stopped: list[bool]
    expected: list[str]

    @property
    def accuracy(self) -> float:
        """Share of answers equal to the expected response (ignoring whitespace at the ends)."""
        return _share(a == r for a, r in self._stripped())

    @property
    def stop_rate(self) -> float:
        """Share of answers the model ended with ``<|endoftext|>``."""
        return _share(self.stopped)

    @property
    def prefix_accuracy(self) -> float:
        """Share of answers that begin with the expected response, whatever follows (credits a
        right answer that rambles on)."""
        return _share(a.startswith(r) for a, r in self._stripped())

    def _stripped(self) -> Iterator[tuple[str, str]]:
        return ((a.strip(), r.strip()) for a, r in zip(self.answers, self.expected, strict=True))

    def select(self, indices: Iterable[int]) -> SFTScore:
        """The score of a subset of the examples (one task, say)."""
        picked = list(indices)
        return SFTScore(
            [self.answers[i] for i in picked],
            [self.stopped[i] for i in picked],
            [self.expected[i] for i in picked],
        )

    def __str__(self) -> str:
        return (
            f"exact match {self.accuracy:.1%}, stopped with <|endoftext|> {self.stop_rate:.1%}, "
            f"starts with the answer {self.prefix_accuracy:.1%} ({len(self.answers)} examples)"
        )


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else math.nan


def evaluate_sft(
    model: LanguageModel,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    max_new_tokens: int = 24,
    *,
    template: str = TEMPLATE,
    batch_size: int = 32,
) -> SFTScore:
    """Ask the model every example's prompt (in the template's format) and compare its greedy
    answer with the expected response.

    Args:
        max_new_tokens: the longest answer generated; keep it above the longest expected
            response (in tokens, plus one for ``<|endoftext|>``) or nothing can match.
        batch_size: prompts generated together (greedy answers do not depend on it).
    """
    checks.whole_number("batch_size", batch_size, 1)
    if not examples:
        raise ValueError("evaluate_sft needs at least one example")
    eot = tokenizer.eot_id
    answers: list[str] = []
    stopped: list[bool] = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        prompts = [tokenizer.encode(format_prompt(e.prompt, template)) for e in chunk]
        rows = generate_batch(model, prompts, max_new_tokens, eos_id=eot, temperature=0.0)
        for prompt, row in zip(prompts, rows, strict=True):
            new = [int(t) for t in row[len(prompt) :]]
            stopped.append(eot in new)
            answers.append(tokenizer.decode(new[: new.index(eot)] if eot in new else new))
    return SFTScore(answers, stopped, [e.response for e in examples])
