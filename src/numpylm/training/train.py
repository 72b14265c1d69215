"""Training a GPT on a text file: the loop, its checkpoints, and evaluation.

One training step is the whole story of learning (``train_step``, which reads like llm.c's):

    lr = learning_rate(cfg, step)              # the schedule: how far to move this step
    loss, grads, _ = objective(step)           # how wrong the model is on this step's batch,
                                               #   and which way each weight should move
    clip_grad_norm(grads, cfg.grad_clip)       # never move too far at once
    optimizer.step(grads, lr=lr)               # move every weight a little that way

The objective is what a run minimises, and the only thing that differs between kinds of
training: ``NextToken`` (next-token prediction on windows of text, here; the same on the answers
only, in ``finetune``), or a preference loss (``align``). ``run_steps`` repeats the step and
does the bookkeeping a real run needs: a validation loss now and then (on text the model never
trains on, so that it measures generalisation, not memory), checkpoints, the progress bar and
Ctrl-C.

The run directory (``--out DIR``: a model directory at every moment, its journaled checkpoints,
resuming, Ctrl-C) is ``runs``'s, shared with fine-tuning; this module adds ``eval_results.json``
(the loss, perplexity and nats per character on all of the validation text, written when a run
finishes) and ``data/`` (the token ids of the text, cached; see ``data.py``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from threadpoolctl import threadpool_limits

from .. import checks, memory
from ..io import checkpoint
from ..io.checkpoint import CheckpointError
from ..models.family import LanguageModel
from ..models.gpt2.model import GPT, GPTConfig
from ..models.gpt2.weights import PRESETS as MODEL_PRESETS
from ..tokens.tokenizer import VOCAB_FILE, Tokenizer
from .data import (
    TextData,
    chars_per_token,
    eval_windows,
    get_batch,
    load_text_data,
    read_text,
    split_text,
)
from .optim import AdamW, clip_grad_norm, cosine_lr
from .runs import (
    CACHE_DIR,
    COMMIT,
    EVAL_RESULTS,
    INCOMING,
    OPTIMIZER_FILE,
    STATE_FORMAT,
    STREAM_BATCHES,
    STREAM_DROPOUT,
    TRAINER_STATE,
    Checkpoint,
    deferred_sigint,
    last_saved,
    load_checkpoint,
    open_run,
    outlive_output,
    recover,
    save_checkpoint,
    saved_args,
    sha256_file,
    sha256_text,
)

__all__ = [  # the run directory's names, which live in runs.py, are here too for train's users
    "COMMIT",
    "INCOMING",
    "MODEL_PRESETS",
    "OPTIMIZER_FILE",
    "STATE_FORMAT",
    "TRAINER_STATE",
    "NextToken",
    "Objective",
    "Schedule",
    "StepLoss",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "check_optimisation",
    "data_parallel",
    "evaluate",
    "evaluate_ids",
    "keep_freed_memory",
    "learning_rate",
    "load_checkpoint",
    "make_tokenizer",
    "parse_tokenizer_spec",
    "recover",
    "resume_config",
    "run_steps",
    "save_checkpoint",
    "sharded_loss_and_grads",
    "train",
    "train_step",
]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite; training stopped without saving it."""


@dataclass
class TrainConfig:
    """Everything a training run needs (``numpylm train`` has one flag per field).

    Attributes:
        data: the UTF-8 text file to train on (the last 10% of it is the validation text).
        out: the run directory (see the module docstring).
        tokenizer: ``gpt2`` (GPT-2's 50257 tokens), ``bpe:SIZE`` (train a byte-level BPE
            vocabulary of SIZE tokens on the training text), or a directory holding
            ``vocab.json`` + ``merges.txt``.
        config: the model shape by name: one of ``MODEL_PRESETS`` or a GPT-2 size.
        n_layer, n_head, n_embd, n_ctx: override single numbers of ``config``.
        steps: optimiser steps in total (the learning-rate schedule ends there).
        batch_size: windows per step; each step trains on ``batch_size * n_ctx`` tokens.
        lr: the peak learning rate, reached after ``warmup`` steps.
        min_lr: the learning rate at the end of the cosine decay (default ``lr / 10``).
        warmup: steps of linear warm-up (a run shorter than that warms up all the way).
        weight_decay: AdamW's decoupled weight decay (weight matrices and embeddings only).
        grad_clip: clip the global gradient norm to this (0 turns clipping off).
        eval_every: compute the validation loss every this many steps (and at the end).
        eval_batches: validation batches per evaluation (windows spread evenly over the
            validation text); 0 evaluates all of it.
        save_every: write a checkpoint every this many steps (default ``eval_every``), and
            always at the end.
        seed: seeds the initial weights and the batch order.
        dtype: ``float32`` or ``float64``.
        threads: split each batch across this many threads, one per core (see
            ``sharded_loss_and_grads``); 1 leaves the parallelism to the BLAS library.
        dropout: the dropout rate of the training steps, in ``[0, 1)`` (see
            ``GPT.loss_and_grads``); 0, the default, turns it off. Evaluation never drops.
    """

    data: str
    out: str
    tokenizer: str = "bpe:1024"
    config: str = "mini"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    n_ctx: int | None = None
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float | None = None
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_batches: int = 20
    save_every: int | None = None
    seed: int = 0
    dtype: str = "float32"
    threads: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        checks.path("data", self.data)
        checks.path("out", self.out)
        parse_tokenizer_spec(self.tokenizer)
        if self.config not in MODEL_PRESETS:
            GPTConfig.preset(self.config)  # raises with the list of GPT-2 sizes
        for name in ("n_layer", "n_head", "n_embd", "n_ctx", "save_every"):
            if getattr(self, name) is not None:
                checks.whole_number(name, getattr(self, name), 1)
        for name in ("steps", "batch_size", "eval_every", "threads"):
            checks.whole_number(name, getattr(self, name), 1)
        for name in ("warmup", "eval_batches", "seed"):
            checks.whole_number(name, getattr(self, name), 0)
        check_optimisation(self)
        if self.lr == 0:
            raise ValueError("lr must be positive, got 0")
        self.model_config(vocab_size=257)  # the shape's own checks (n_head divides n_embd, ...)

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The model's shape: the named ``config`` with the single overrides applied."""
        if self.config in MODEL_PRESETS:
            n_layer, n_head, n_embd, n_ctx = MODEL_PRESETS[self.config]
            base = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_ctx=n_ctx)
        else:
            base = GPTConfig.preset(self.config)
        fields = ("n_layer", "n_head", "n_embd", "n_ctx")
        changes = {k: getattr(self, k) for k in fields if getattr(self, k) is not None}
        return dataclasses.replace(base, vocab_size=vocab_size, **changes)


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        out: the run directory, holding the last checkpoint.
        step: optimiser steps done (including those before a resume).
        losses: the training loss of every step, from the first.
        history: one dict per evaluation: ``step``, ``val_loss``, ``train_loss`` (the mean
            training loss since the previous evaluation), ``lr``.
        interrupted: True when Ctrl-C stopped the run early (after saving).
        final: ``evaluate``'s figures over the whole validation text, after a finished run
            (also written to ``eval_results.json`` in the run directory).
    """

    out: Path
    step: int
    losses: list[float]
    history: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False
    final: dict[str, float] | None = None


def parse_tokenizer_spec(spec: str) -> tuple[str, int | None]:
    """``gpt2`` -> ("gpt2", None); ``bpe:1024`` -> ("bpe", 1024); a directory -> ("dir", None)."""
    if spec == "gpt2":
        return "gpt2", None
    if spec.startswith("bpe:"):
        size = spec.removeprefix("bpe:")
        if not size.isdigit() or int(size) < 257:
            raise ValueError(
                f"tokenizer {spec!r}: SIZE in bpe:SIZE must be a whole number >= 257 "
                "(256 bytes + <|endoftext|>), e.g. bpe:1024"
            )
        return "bpe", int(size)
    if spec and Path(spec).is_dir():  # "" would be the current directory
        return "dir", None
    raise ValueError(
        f"tokenizer must be 'gpt2', 'bpe:SIZE' or a directory with vocab.json and merges.txt, "
        f"got {spec!r}"
    )


def make_tokenizer(spec: str, train_text: str) -> Tokenizer:
    """The tokenizer a fresh run uses; ``bpe:SIZE`` learns it from the training text only, so
    the validation text stays unseen."""
    kind, size = parse_tokenizer_spec(spec)
    if kind == "gpt2":
        return Tokenizer.gpt2()
    if kind == "dir":
        return Tokenizer.from_pretrained(spec)
    from ..tokens.bpe import train_bpe

    assert size is not None
    return train_bpe(train_text, size)


# --------------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    model: LanguageModel,
    tokenizer: Tokenizer,
    text: str,
    *,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """The model's loss on ``text``, over non-overlapping windows of ``n_ctx`` tokens.

    Returns a dict with:

    - ``loss``: mean cross-entropy per predicted token, in nats,
    - ``perplexity``: ``exp(loss)``, the number of equally likely tokens the model is as unsure
      as,
    - ``nats_per_char``: total nats / number of characters predicted. It does not depend on
      the tokenizer (a vocabulary of long tokens has a high loss per token but few tokens), so
      it compares with character-level models such as nanoGPT's Shakespeare,
    - ``bits_per_char``: the same in bits,
    - ``tokens``, ``chars``: how many were predicted (the first token of the text has no
      context and is not; every other is, once).

    ``max_batches`` limits the work to that many batches of windows spread evenly over the
    text (0 or None: all of it); ``batch_size`` (windows per batch, at least 1) defaults to
    what keeps the logits under about 256 MB.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    return evaluate_ids(
        model, ids, chars_per_token(tokenizer), batch_size=batch_size, max_batches=max_batches
    )


def evaluate_ids(
    model: LanguageModel,
    ids: np.ndarray,
    char_counts: np.ndarray,
    *,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """``evaluate`` for text already encoded: ``ids`` (N,), ``char_counts`` (V,) from
    ``data.chars_per_token``."""
    T, V = model.config.n_ctx, model.config.vocab_size
    if batch_size is not None:
        checks.whole_number("batch_size", batch_size, 1)
    if max_batches is not None:
        checks.whole_number("max_batches", max_batches, 0)
    if batch_size is None:
        batch_size = int(np.clip(2**28 // (T * V * model.dtype.itemsize), 1, 64))
    x, y = eval_windows(ids, T)  # (W, T) each
    if max_batches:
        n = min(len(x), max_batches * batch_size)
        pick = np.linspace(0, len(x) - 1, n).round().astype(np.int64)
        x, y = x[pick], y[pick]
    total_nats = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        total_nats += model.loss(xb, yb) * int((yb >= 0).sum())  # mean -> sum
    n_tokens = int((y >= 0).sum())
    n_chars = int(char_counts[y[y >= 0]].sum())
    loss = total_nats / n_tokens
    per_char = total_nats / n_chars if n_chars else math.nan
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "nats_per_char": per_char,
        "bits_per_char": per_char / math.log(2),
        "tokens": float(n_tokens),
        "chars": float(n_chars),
    }


def resume_config(out: str | os.PathLike[str], **changes: Any) -> TrainConfig:
    """The ``TrainConfig`` a run in ``out`` was started with, with ``changes`` applied (for
    example ``steps=5000`` to train longer)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    kept = {k: v for k, v in saved_args(out, "train").items() if k in known}
    return TrainConfig(**{**kept, **changes, "out": os.fspath(out)})  # never the old path


# --------------------------------------------------------------------------------------------
# Training


def train(
    cfg: TrainConfig, *, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> TrainResult:
    """Train a model as ``cfg`` says, checkpointing to ``cfg.out``; see the module docstring.

    With ``resume``, continue the run saved in ``cfg.out`` exactly where it stopped (the model
    shape and tokenizer come from the checkpoint; ``cfg.steps`` may be larger than before).
    Ctrl-C finishes the current step, saves, and returns with ``interrupted=True``; a second
    Ctrl-C stops at once without saving. A new run never overwrites anything in ``cfg.out``;
    ``overwrite`` first deletes a numpylm run there, and refuses files numpylm did not write
    (``runs.open_run``). If standard output or error goes away, the run goes on silently
    (``runs.outlive_output``).

    Raises:
        TrainingDiverged: the loss, the gradient or the weights became NaN or infinite. The
            last checkpoint saved before it is kept (it holds finite weights).
        CheckpointError: ``resume`` without a usable checkpoint, a fresh run into a directory
            that holds a run or other files, or a directory another run is writing.
    """
    out = Path(cfg.out)
    check_memory(cfg)
    text = read_text(cfg.data)
    sha = sha256_text(text)
    tokenizer_dir = cfg.tokenizer if parse_tokenizer_spec(cfg.tokenizer)[0] == "dir" else None
    with (
        outlive_output(),
        open_run(
            out,
            "train",
            resume=resume,
            data_sha256=sha,
            data=cfg.data,
            dtype=cfg.dtype,
            overwrite=overwrite,
            reads=[cfg.data, tokenizer_dir],
        ) as run,
    ):
        return _train(cfg, run, text, sha, progress)


def check_memory(cfg: TrainConfig) -> None:
    """Refuse a run that would not fit in the free memory, before anything is read, learnt or
    built: its text (``memory.text_bytes``) and its training steps (``memory.training_bytes``:
    the model, its gradients and AdamW's moments, the activations of a batch, the losses kept),
    from the shape the flags give. The vocabulary is the one the tokenizer will have."""
    kind, size = parse_tokenizer_spec(cfg.tokenizer)
    if kind == "dir":
        vocab = len(checkpoint.read_json(Path(cfg.tokenizer) / VOCAB_FILE))
    else:
        vocab = size or 50257  # bpe:SIZE counts <|endoftext|>; GPT-2's has 50257 tokens
    c = cfg.model_config(vocab)
    try:
        text = memory.text_bytes(os.stat(cfg.data).st_size)
    except OSError:  # read_text says what is wrong with the path
        text = 0
    need = memory.training_bytes(
        c.vocab_size,
        c.n_ctx,
        c.n_layer,
        c.n_head,
        c.n_embd,
        batch_size=cfg.batch_size,
        itemsize=np.dtype(cfg.dtype).itemsize,
        threads=cfg.threads,
        steps=cfg.steps,
    )
    memory.fits(
        text + need,
        f"training {memory.num_params(c.vocab_size, c.n_ctx, c.n_layer, c.n_embd):,} "
        f"parameters (n_layer={c.n_layer}, n_embd={c.n_embd}, n_ctx={c.n_ctx}, vocabulary "
        f"{c.vocab_size}) on batches of {cfg.batch_size} x {c.n_ctx} tokens for {cfg.steps:,} "
        "steps",
        "use a smaller --n-embd, --n-layer, --n-ctx, --batch-size or --steps (or less --data)",
    )


def _train(
    cfg: TrainConfig, run: Checkpoint | None, text: str, sha: str, progress: bool
) -> TrainResult:
    """``train``, once the run directory is open (and locked): ``run`` is the checkpoint to
    resume, or None for a new run."""
    out = Path(cfg.out)
    if run is not None:
        model, tokenizer = run.model, run.tokenizer
        expected = cfg.model_config(model.config.vocab_size)
        if expected != model.config:
            raise ValueError(
                f"the model in the checkpoint is {model.config}, but the arguments describe "
                f"{expected}: the shape of a run cannot change when resuming"
            )
    else:
        tokenizer = make_tokenizer(cfg.tokenizer, split_text(text)[0])
        model = GPT(cfg.model_config(tokenizer.n_vocab), seed=cfg.seed, dtype=np.dtype(cfg.dtype))
    step, losses, history = (run.step, run.losses, run.history) if run else (0, [], [])

    data = load_text_data(cfg.data, tokenizer, out / CACHE_DIR, text=text)
    cache = {p.name: sha256_file(p) for p in data.files}  # the token ids trained on
    # By content, not by name: the cache files are named after the data file, which may have
    # been renamed since (``--data NEW --resume``).
    if run is not None and _by_part(run.state.get("data_cache", cache)) != _by_part(cache):
        raise CheckpointError(
            f"the token ids in {out / CACHE_DIR} are not the ones this run was trained on (their "
            f"sha256 differs from the one in {TRAINER_STATE}): delete {out / CACHE_DIR} to "
            "tokenise the text again, then resume"
        )
    T = model.config.n_ctx
    for name, ids in (("training", data.train), ("validation", data.val)):
        if len(ids) <= T:
            raise ValueError(
                f"the {name} text has {len(ids)} tokens, but a window of n_ctx + 1 = {T + 1} "
                f"is needed: use more text or a smaller --n-ctx"
            )
    optimizer = AdamW(model.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The batch generator is seeded apart from the weights' (both come from cfg.seed).
    rng = np.random.default_rng([cfg.seed, STREAM_BATCHES])
    if run is not None:
        optimizer.load_state_dict(run.optimizer_state)
        rng.bit_generator.state = run.state["rng"]
    char_counts = chars_per_token(tokenizer)
    elapsed = run.elapsed if run else 0.0

    def validate() -> dict[str, float]:
        val = evaluate_ids(
            model, data.val, char_counts, batch_size=cfg.batch_size, max_batches=cfg.eval_batches
        )
        return {"val_loss": val["loss"]}

    def save(at: int) -> None:
        save_checkpoint(
            out,
            model,
            tokenizer,
            optimizer,
            {
                "kind": "train",
                "step": at,
                "rng": rng.bit_generator.state,
                "args": {**dataclasses.asdict(cfg), "data": str(Path(cfg.data).resolve())},
                "data_sha256": sha,
                "data_cache": cache,
                "dtype": str(model.dtype),
                "elapsed": elapsed + (time.perf_counter() - started),
                "history": history,
                "losses": losses,
            },
        )

    from tqdm import tqdm

    def log(message: str) -> None:
        if progress:
            tqdm.write(message)

    _describe(model, data, char_counts, cfg, run is not None, step, out, log)
    started = time.perf_counter()

    def next_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
        # B random windows from the run's batch generator, whose state the checkpoints keep
        return get_batch(data.train, cfg.batch_size, T, rng)  # (B, T) each

    with data_parallel(cfg.threads) as pool:
        objective = NextToken(model, next_batch, cfg.dropout, cfg.seed, pool, cfg.threads)
        result = run_steps(
            optimizer,
            cfg,
            objective,
            validate,
            save,
            out=out,
            step=step,
            losses=losses,
            history=history,
            progress=progress,
        )
    if not result.interrupted:  # the figure to report: all of the validation text
        result.final = evaluate_ids(model, data.val, char_counts, batch_size=cfg.batch_size)
        checkpoint.write_json(out / EVAL_RESULTS, {"step": result.step, **result.final})
        log(
            f"step {result.step}, all of the validation text: loss {result.final['loss']:.4f}, "
            f"perplexity {result.final['perplexity']:.2f}, "
            f"{result.final['nats_per_char']:.4f} nats per character"
        )
    return result


def _by_part(cache: dict[str, str]) -> dict[str, str]:
    """``{"x.KEY.train.npy": sha, ...}`` -> ``{"train": sha, "val": sha}``."""
    return {name.rsplit(".", 2)[-2]: digest for name, digest in cache.items()}


class Schedule(Protocol):
    """What the step loop and ``check_optimisation`` read of a run's configuration
    (``TrainConfig``, ``finetune.FinetuneConfig`` and ``align.AlignConfig`` all have these
    fields; see ``TrainConfig``)."""

    @property
    def steps(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def min_lr(self) -> float | None: ...
    @property
    def warmup(self) -> int: ...
    @property
    def grad_clip(self) -> float: ...
    @property
    def eval_every(self) -> int: ...
    @property
    def save_every(self) -> int | None: ...
    @property
    def dropout(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def dtype(self) -> str: ...


class StepLoss(NamedTuple):
    """What an objective gives for one step's batch.

    Attributes:
        loss: the batch's loss (a Python float).
        grads: its gradient for every parameter, by name (the shapes and dtype of the params).
        tokens: the tokens the batch read, padding included (for the progress bar's tok/s).
    """

    loss: float
    grads: dict[str, np.ndarray]
    tokens: int


Objective = Callable[[int], StepLoss]
"""What a run minimises: ``objective(step)`` draws that step's batch and returns its
``StepLoss``. ``NextToken`` is pretraining's and fine-tuning's; ``align.Preference`` is DPO's."""


@dataclass
class NextToken:
    """Next-token prediction: the mean cross-entropy of the targets of ``batches(step)``, a
    pair of (B, T) int64 arrays, inputs and targets (-1 where a target does not count).

    ``train``'s batches are windows of text, every target counted; ``finetune``'s are padded
    examples whose targets count on the answers only. Same objective, other batches.

    Attributes:
        model: the model being trained.
        batches: ``step -> (x, y)``.
        dropout: the dropout rate of the training passes (0: none).
        seed: the run's seed; the dropout masks of a step come from it and the step alone, so
            a resumed run draws the same ones with no generator state to save.
        pool, threads: split each batch across ``threads`` threads (``data_parallel``).
    """

    model: GPT
    batches: Callable[[int], tuple[np.ndarray, np.ndarray]]
    dropout: float = 0.0
    seed: int = 0
    pool: ThreadPoolExecutor | None = None
    threads: int = 1

    def __call__(self, step: int) -> StepLoss:
        x, y = self.batches(step)  # (B, T) each
        rng = np.random.default_rng([self.seed, STREAM_DROPOUT, step]) if self.dropout else None
        loss, grads = sharded_loss_and_grads(
            self.model, x, y, self.pool, self.threads, dropout=self.dropout, rng=rng
        )
        return StepLoss(loss, grads, x.size)


def learning_rate(cfg: Schedule, step: int) -> float:
    """The learning rate of ``step`` (from 0): ``cfg.warmup`` steps of linear warm-up to
    ``cfg.lr``, then a cosine decay to ``cfg.min_lr`` (default ``lr / 10``) at ``cfg.steps``."""
    return cosine_lr(
        step,
        max_lr=cfg.lr,
        warmup_steps=min(cfg.warmup, cfg.steps),
        total_steps=cfg.steps,
        min_lr=cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr,
    )


def train_step(
    objective: Objective, optimizer: AdamW, cfg: Schedule, step: int
) -> tuple[StepLoss, float]:
    """Step ``step`` (from 0) of a run: the schedule's learning rate, the loss and gradient of
    the step's batch, the gradient clipped, the weights moved. Returns the objective's
    ``StepLoss`` and the learning rate.

    Only the parameters ``optimizer`` holds are trained, so building it over a subset of
    ``model.params`` freezes the rest.

    Raises:
        TrainingDiverged: the loss or the gradient is NaN or infinite; nothing was changed.
    """
    lr = learning_rate(cfg, step)
    result = objective(step)
    grads = {name: result.grads[name] for name in optimizer.params}  # not the frozen ones
    norm = clip_grad_norm(grads, cfg.grad_clip or math.inf)  # inf: measure, no clip
    if not (math.isfinite(result.loss) and math.isfinite(norm)):
        raise TrainingDiverged(
            f"training diverged at step {step + 1}: loss {result.loss}, gradient norm {norm} "
            f"(lr {lr:.3g})"
        )
    optimizer.step(grads, lr=lr)
    return result, lr


def run_steps(
    optimizer: AdamW,
    cfg: Schedule,
    objective: Objective,
    validate: Callable[[], dict[str, float]],
    save: Callable[[int], None],
    *,
    out: Path,
    step: int,
    losses: list[float],
    history: list[dict[str, float]],
    progress: bool = True,
) -> TrainResult:
    """The loop of every kind of training: ``train_step`` from ``step`` to ``cfg.steps``, with
    the NaN stop, evaluations, saves, the progress bar and Ctrl-C.

    ``validate()`` gives the held-out figures, ``"val_loss"`` first (an objective may add
    more, such as DPO's reward margin); it is called at step 0 of a fresh run, every
    ``cfg.eval_every`` steps and at the end, and each call adds a row to ``history``:
    ``step``, ``train_loss`` (the mean since the previous row), the figures, ``lr``.
    ``save(step)`` writes a checkpoint. ``losses`` and ``history`` are appended to in place.
    """
    from tqdm import tqdm

    def log(message: str) -> None:
        if progress:
            tqdm.write(message)

    keep_freed_memory()
    save_every = cfg.save_every or cfg.eval_every
    if step == 0 and not history:
        history.append({"step": 0, **validate()})
    if step >= cfg.steps:
        return TrainResult(out, step, losses, history)
    bar = tqdm(total=cfg.steps, initial=step, unit="step", disable=not progress, smoothing=0.1)
    with bar, deferred_sigint() as interrupted:
        while step < cfg.steps:
            t0 = time.perf_counter()
            try:
                result, lr = train_step(objective, optimizer, cfg, step)
            except TrainingDiverged as e:
                raise TrainingDiverged(
                    f"{e}. Stopped without saving; {last_saved(out)}. Try a lower --lr, a "
                    "longer --warmup or --grad-clip 1"
                ) from None
            seconds = time.perf_counter() - t0  # the step alone, not the evaluations and saves
            step += 1
            losses.append(result.loss)

            if step % cfg.eval_every == 0 or step == cfg.steps:
                since = int(history[-1]["step"])  # the mean since the previous evaluation
                train_loss = float(np.mean(losses[since:]))
                figures = validate()
                history.append({"step": step, "train_loss": train_loss, **figures, "lr": lr})
                more = "".join(
                    f", {name.removeprefix('val_').replace('_', ' ')} {value:.4f}"
                    for name, value in figures.items()
                    if name != "val_loss"
                )
                log(
                    f"step {step}: train loss {train_loss:.4f}, val loss "
                    f"{figures['val_loss']:.4f}{more}"
                )
            if step % save_every == 0 or step == cfg.steps or interrupted():
                # The loss and gradient were finite, but the update can still overflow: a
                # checkpoint never holds weights that are not finite.
                if not all(np.isfinite(p).all() for p in optimizer.params.values()):
                    raise TrainingDiverged(
                        f"training diverged at step {step}: its update made the weights "
                        f"infinite or NaN (lr {lr:.3g}). Stopped without saving; "
                        f"{last_saved(out)}. Try a lower --lr, a longer --warmup or --grad-clip 1"
                    )
                save(step)
            speed = f"{result.tokens / seconds:,.0f} tok/s"
            bar.set_postfix_str(f"loss {result.loss:.4f}, {speed}", refresh=False)
            bar.update()
            if interrupted():
                return TrainResult(out, step, losses, history, interrupted=True)
    return TrainResult(out, step, losses, history)


def data_parallel(threads: int) -> AbstractContextManager[ThreadPoolExecutor | None]:
    """A pool of ``threads`` worker threads for ``sharded_loss_and_grads`` (None for 1 thread,
    which leaves the parallelism to the BLAS library). While the pool lives, BLAS keeps to one
    thread per shard: two levels of threads on the same cores would make them wait for each
    other."""
    return _data_parallel(checks.whole_number("threads", threads, 1))


@contextmanager
def _data_parallel(threads: int) -> Iterator[ThreadPoolExecutor | None]:
    if threads == 1:
        yield None
        return
    with ThreadPoolExecutor(threads) as pool, threadpool_limits(1, user_api="blas"):
        yield pool


def sharded_loss_and_grads(
    model: GPT,
    x: np.ndarray,
    y: np.ndarray,
    pool: ThreadPoolExecutor | None,
    threads: int,
    *,
    dropout: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """``model.loss_and_grads(x, y, dropout=dropout, rng=rng)``, with the batch split across
    the threads of ``pool``.

    This is data parallelism, as GPUs do it across devices, here across the cores of one
    machine: each thread runs the forward and backward pass of a slice of the batch (NumPy
    releases Python's lock inside its array operations, so the threads really run at once),
    and the slices' results are combined into the batch's mean loss and gradient, each slice
    weighted by the number of targets it counts. The result equals the unsplit batch's up to
    float rounding; the same split gives bit-identical results every time.

    Args:
        x, y: (B, T) inputs and targets (-1 where a target does not count).
        pool: ``threads`` worker threads, or None to run the whole batch in this thread.
        dropout, rng: the dropout rate and the generator of its masks. Each shard draws from
            its own generator, spawned from ``rng`` here before the threads start, so the
            masks depend on the shard's place in the batch, never on which thread runs first.
    """
    if pool is None or len(x) < 2:
        return model.loss_and_grads(x, y, dropout=dropout, rng=rng)
    shards = [s for s in np.array_split(np.arange(len(x)), threads) if len(s)]
    rngs: list[np.random.Generator | None] = [None] * len(shards)
    if dropout and rng is not None:
        rngs = list(rng.spawn(len(shards)))
    counts = [int((y[s] != -1).sum()) for s in shards]
    kept = [i for i, n in enumerate(counts) if n]  # a shard with nothing to learn is skipped
    weights = {i: counts[i] / sum(counts) for i in kept}  # each shard's share of the mean

    def run(i: int) -> tuple[float, dict[str, np.ndarray]]:
        loss, grads = model.loss_and_grads(x[shards[i]], y[shards[i]], dropout=dropout, rng=rngs[i])
        for g in grads.values():  # weighted here, in the shard's own thread
            g *= weights[i]
        return loss * weights[i], grads

    results = list(pool.map(run, kept))
    loss = sum(shard_loss for shard_loss, _ in results)
    grads = results[0][1]  # the first shard's own arrays
    for _, shard_grads in results[1:]:
        for name, total in grads.items():
            total += shard_grads[name]
    return float(loss), grads


def _describe(
    model: GPT,
    data: TextData,
    char_counts: np.ndarray,
    cfg: TrainConfig,
    resume: bool,
    step: int,
    out: Path,
    write: Callable[[str], None],
) -> None:
    c = model.config
    write(
        f"model: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} channels, context {c.n_ctx}, "
        f"vocabulary {c.vocab_size}: {model.num_params():,} parameters ({model.dtype})"
    )
    write(
        f"data: {data.n_chars:,} characters -> {len(data.train):,} training and "
        f"{len(data.val):,} validation tokens; {cfg.batch_size * c.n_ctx:,} tokens per step"
    )
    ratio = int(char_counts[data.val].sum()) / len(data.val)
    write(f"validation text: {ratio:.3f} characters per token (nats per character = loss / that)")
    write(f"{'resuming at' if resume else 'starting at'} step {step} of {cfg.steps} in {out}")


def check_optimisation(cfg: Schedule) -> None:
    """The checks a training and a fine-tuning configuration share: ``lr``, ``weight_decay``
    and ``grad_clip`` finite and >= 0, ``min_lr`` (if set) at most ``lr``, the dtype, and the
    dropout rate."""
    for name in ("lr", "weight_decay", "grad_clip"):
        checks.finite_number(name, getattr(cfg, name))
    if cfg.min_lr is not None:
        checks.finite_number("min_lr", cfg.min_lr)
        if cfg.min_lr > cfg.lr:
            raise ValueError(f"min_lr ({cfg.min_lr}) must not exceed lr ({cfg.lr})")
    if cfg.dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {cfg.dtype!r}")
    checks.dropout_rate(cfg.dropout, "dropout")


@functools.cache
def keep_freed_memory() -> None:
    """Ask glibc's allocator to keep freed memory for reuse rather than give it back to the OS.

    A training step creates and frees dozens of arrays of a few MB. By default glibc returns
    such blocks to the OS on ``free`` and page-faults fresh zeroed pages in on the next
    allocation, which costs 15-20% of a step (PyTorch avoids it with its caching allocator).
    Raising the mmap and trim thresholds makes the next step reuse the same memory (the process
    stays at its peak size between steps, rather than shrinking and growing again). Runs once
    per process, on Linux with glibc; elsewhere it does nothing. ``run_steps`` calls it.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # blocks up to 32 MB come from the reusable heap
    mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and the heap is not trimmed below 1 GB of free space
