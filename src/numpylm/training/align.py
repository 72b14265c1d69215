"""Preference tuning with DPO: teaching a model which of two answers is the better one.

Fine-tuning (``finetune``) shows a model the answer to give. Preference tuning shows it two
answers to the same prompt, one better than the other, and moves it towards the better:

    {"prompt": "What is the capital of Uganda?", "chosen": "I don't know.", "rejected": "Tokyo."}

Direct Preference Optimization (DPO; Rafailov et al., 2023) does it with no reward model and no
reinforcement learning. It keeps a frozen copy of the starting model, the *reference*, and
scores an answer y to a prompt x by how much more likely the model being trained, the *policy*
pi, makes it than the reference does:

    r(y) = beta * (log pi(y|x) - log ref(y|x))          the answer's "implicit reward"

``log pi(y|x)`` is the sum of the log-probabilities of the answer's tokens, ``<|endoftext|>``
included, given the prompt: the tokens fine-tuning scores (``finetune.encode_example``). The
loss of a pair is a logistic loss on the reward margin ``z = r(chosen) - r(rejected)``:

    loss = -log sigmoid(z)

At the start the policy is the reference, every reward is 0 and the loss is log 2 = 0.693; it
falls as the margin grows. The reference log-probabilities never change, so they are computed
once, before the first step. ``beta`` is how strongly the policy is held to the reference: the
sigmoid saturates once the margin is a few units, that is once the log-ratios have moved by a
few units / beta, so a small beta lets the policy move far and a large one stops it early.

The gradient (``preference_loss_and_grads``) is fine-tuning's gradient twice over, with
weights: up on the chosen answer, down on the rejected one. ``align`` runs it with the same
loop (``train.run_steps``), run directory, checkpoints, resume and Ctrl-C as ``finetune``;
the run directory records the sha256 of the reference's weights, and resuming refuses a
reference that is not the same model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import checks, memory
from ..io import checkpoint
from ..io.checkpoint import CheckpointError
from ..io.loading import model_dir
from ..layers import cross_entropy
from ..models.gpt2 import backward
from ..models.gpt2.model import GPT, param_shapes
from ..tokens.tokenizer import Tokenizer
from .finetune import (
    TEMPLATE,
    DataError,
    Example,
    batch_indices,
    count_steps,
    encode_example,
    load_base,
    load_template,
    pad_batch,
    read_records,
    split_examples,
    split_template,
)
from .optim import AdamW
from .runs import (
    STREAM_DROPOUT,
    TEMPLATE_FILE,
    Checkpoint,
    open_run,
    outlive_output,
    save_checkpoint,
    saved_args,
    sha256_file,
)
from .train import StepLoss, TrainResult, check_optimisation, run_steps

Row = tuple[list[int], int]
"""An encoded answer: ``finetune.encode_example``'s ``(ids, n_prompt)``."""


@dataclass(frozen=True)
class Pair:
    """One prompt, the answer to prefer, and the answer to avoid."""

    prompt: str
    chosen: str
    rejected: str


# --------------------------------------------------------------------------------------------
# Data: JSON Lines


def read_pairs(path: str | os.PathLike[str]) -> list[Pair]:
    """Read preference pairs, one JSON object ``{"prompt": ..., "chosen": ..., "rejected":
    ...}`` a line (blank lines are skipped).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the path is a directory, a pipe or a device, not a file.
        ValueError: the file would not fit in memory (``memory.text_bytes``).
        DataError: the file holds no pair, or bad lines (among them a pair whose two answers
            are the same, which teaches nothing): each is reported as ``FILE:LINE: reason``.
    """

    def check(values: tuple[str, ...]) -> None:
        if values[1] == values[2]:
            raise ValueError("'chosen' and 'rejected' are the same answer: a pair must differ")

    keys = ("prompt", "chosen", "rejected")
    records = read_records(path, keys, check, fewer="align on fewer pairs")
    return [Pair(*values) for values in records]


def write_pairs(path: str | os.PathLike[str], pairs: Sequence[Pair]) -> Path:
    """Write pairs as JSON Lines (UTF-8, one object a line), atomically."""
    lines = [json.dumps(dataclasses.asdict(p), ensure_ascii=False) + "\n" for p in pairs]
    out = Path(path)
    checkpoint.atomic_write_bytes(out, "".join(lines).encode("utf-8"))
    return out


def encode_pairs(
    tokenizer: Tokenizer, pairs: Sequence[Pair], template: str, n_ctx: int, source: str
) -> list[tuple[Row, Row]]:
    """Each pair's two answers encoded as fine-tuning encodes an example; a pair with an
    answer longer than the context is left out (its log-probability would be cut short)."""
    rows = [
        tuple(
            encode_example(tokenizer, Example(p.prompt, a), template)
            for a in (p.chosen, p.rejected)
        )
        for p in pairs
    ]
    fitting = [(c, r) for c, r in rows if max(len(c[0]), len(r[0])) - 1 <= n_ctx]
    if not fitting:
        raise DataError(
            f"no pair of {source} fits the model's context of {n_ctx} tokens; shorten them"
        )
    return fitting


# --------------------------------------------------------------------------------------------
# The loss and its gradient


def sequence_logprobs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``log p(answer | prompt)`` of each row: (N, T, V) logits and (N, T) targets (-1 where a
    target does not count) -> (N,) sums of ``log softmax(logits)[target]`` over the counted
    positions, in the logits' dtype."""
    counted = targets != -1
    z = logits - logits.max(axis=-1, keepdims=True)  # (N, T, V), shifted: exp cannot overflow
    log_norm = np.log(np.exp(z).sum(axis=-1))  # (N, T)
    picked = np.take_along_axis(z, np.where(counted, targets, 0)[..., None], axis=-1)[..., 0]
    return np.where(counted, picked - log_norm, 0).sum(axis=-1)


def preference_loss(margins: np.ndarray) -> float:
    """DPO's loss of a batch: the mean of ``-log sigmoid(z)`` over its (B,) reward margins,
    computed as ``log(1 + exp(-z))`` so that no margin overflows."""
    return float(np.logaddexp(0, -margins).mean())


def preference_loss_and_grads(
    model: GPT,
    ids: np.ndarray,
    targets: np.ndarray,
    ref_logps: np.ndarray,
    beta: float,
    rate: float = 0.0,
    rng: np.random.Generator | None = None,
    *,
    nll: float = 0.0,
) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """DPO's loss on a batch of B pairs and its gradient for every parameter, by hand.

    The derivation. Write ``s(y) = sum_t -log softmax(logits_t)[y_t]`` for the summed
    cross-entropy of an answer's tokens (what fine-tuning minimises), so ``log pi(y|x) =
    -s(y)``. For pair i, with the reference's log-probabilities fixed numbers:

        z_i  = beta * [(log pi(w_i) - log ref(w_i)) - (log pi(l_i) - log ref(l_i))]
        loss = (1/B) * sum_i -log sigmoid(z_i)

    (w: the chosen answer, l: the rejected one). Differentiate, step by step:

        d(-log sigmoid(z)) / dz = -(1 - sigmoid(z)) = -sigmoid(-z)
        dz_i / dtheta            = beta * (d log pi(w_i) - d log pi(l_i))
                                 = beta * (d s(l_i) - d s(w_i))
        dloss / dtheta           = sum_i  c_i * d s(w_i)  -  c_i * d s(l_i),
                                   with c_i = beta * sigmoid(-z_i) / B

    So the gradient is that of a weighted cross-entropy: weight +c_i on every answer token of
    the chosen answer (a gradient step lowers its cross-entropy: up on the chosen) and -c_i on
    every answer token of the rejected one (down on the rejected). The weight c_i is large
    while the policy still ranks the pair wrongly (z_i < 0, sigmoid(-z_i) near 1) and fades as
    the pair is learned (z_i >> 0): learned pairs stop pulling. The rest is the backward pass
    of fine-tuning: ``layers.cross_entropy(..., weights=)`` gives ``dlogits = weight *
    (softmax - onehot)`` at each answer token, and ``backward.backward`` takes it from there.

    DPO only asks for the gap between the two answers, and it can open the gap by pushing both
    down. ``nll`` > 0 adds fine-tuning's own loss on the chosen answers, ``nll`` times their
    mean cross-entropy per token (RPO; Pang et al., 2024), which holds the chosen answers'
    likelihood up; its gradient adds ``nll / n`` to the weight of each of the ``n`` chosen
    answer tokens of the batch.

    Args:
        model: the policy.
        ids, targets: (2B, T) int64: the B chosen answers' rows, then the B rejected answers'
            rows in the same pair order (``finetune.pad_batch``: targets -1 at the prompt and
            the padding).
        ref_logps: (2B,) the reference's ``log ref(y|x)`` of the same rows.
        beta: how strongly the policy is held to the reference (> 0).
        rate, rng: dropout, as in ``GPT.loss_and_grads``.
        nll: the weight of the chosen answers' cross-entropy added to the loss (0: pure DPO).

    Returns:
        ``(loss, grads, margins)``: the mean loss over the pairs (plus the ``nll`` term), the
        gradient (a dict with the names, shapes and dtype of ``model.params``), and the (B,) reward
        margins ``z``.
    """
    B = len(ids) // 2
    logits, tape = backward.record(model, ids, rate, rng)  # (2B, T, V), what backward reads
    logps = sequence_logprobs(logits, targets)  # (2B,)
    rewards = beta * (logps - ref_logps)
    margins = rewards[:B] - rewards[B:]  # (B,) z
    pull = beta * np.exp(-np.logaddexp(0, margins)) / B  # (B,) c = beta * sigmoid(-z) / B
    row_weight = np.concatenate([pull, -pull]).astype(logits.dtype)  # (2B,): up, then down
    weights = np.broadcast_to(row_weight[:, None], targets.shape)  # (2B, T)
    loss = preference_loss(margins)
    if nll:
        n_chosen = int((targets[:B] != -1).sum())
        loss += nll * float(-logps[:B].sum()) / n_chosen
        weights = weights.copy()
        weights[:B] += nll / n_chosen
    _, dlogits = cross_entropy(logits, targets, weights=weights)
    del logits  # the largest activation; its gradient has taken its place
    c = model.config
    grads = backward.backward(model.params, c.n_layer, c.n_head, ids, tape, dlogits, rate)
    return loss, grads, margins


def answer_logprobs(model: GPT, rows: Sequence[Row], batch_size: int, pad_id: int) -> np.ndarray:
    """(n,) ``log p(answer | prompt)`` of encoded answers, forward only, in batches."""
    out = []
    for i in range(0, len(rows), batch_size):
        x, y = pad_batch(rows[i : i + batch_size], pad_id)  # (b, T) each
        out.append(sequence_logprobs(model(x), y))
    return np.concatenate(out)


def pair_logprobs(
    model: GPT, pairs: Sequence[tuple[Row, Row]], batch_size: int, pad_id: int
) -> np.ndarray:
    """(n, 2) ``log p`` of each pair's chosen (column 0) and rejected (column 1) answer."""
    flat = [row for pair in pairs for row in pair]  # chosen, rejected, chosen, ...
    return answer_logprobs(model, flat, batch_size, pad_id).reshape(-1, 2)


def preference_figures(policy: np.ndarray, reference: np.ndarray, beta: float) -> dict[str, float]:
    """The figures of a set of pairs, from (n, 2) log-probabilities of the policy and the
    reference: ``val_loss`` (DPO's), ``val_margin`` (the mean reward margin), ``val_accuracy``
    (the share of pairs whose chosen answer's reward is above the rejected one's),
    ``val_chosen`` and ``val_rejected`` (the mean rewards)."""
    rewards = beta * (policy - reference)  # (n, 2)
    margins = rewards[:, 0] - rewards[:, 1]
    return {
        "val_loss": preference_loss(margins),
        "val_margin": float(margins.mean()),
        "val_accuracy": float((margins > 0).mean()),
        "val_chosen": float(rewards[:, 0].mean()),
        "val_rejected": float(rewards[:, 1].mean()),
    }


def weights_sha256(model: GPT) -> str:
    """The sha256 of a model's weights as it computes with them (names, shapes, dtype and
    bytes, in ``param_shapes`` order): how a run recognises its reference."""
    h = hashlib.sha256()
    for name in param_shapes(model.config):
        p = np.ascontiguousarray(model.params[name])
        h.update(f"{name} {p.shape} {p.dtype}\n".encode())
        h.update(p.tobytes())
    return h.hexdigest()


@dataclass
class Preference:
    """DPO's objective for ``train.run_steps``: batch ``step`` is ``batch_size`` pairs
    (``finetune.batch_indices``), its loss and gradient ``preference_loss_and_grads``.

    Attributes:
        model: the policy.
        pairs: the encoded training pairs, (chosen, rejected).
        reference: (n, 2) the reference's log-probabilities of the pairs' answers.
        beta, batch_size, seed, pad_id, dropout, nll: as in ``AlignConfig``.
    """

    model: GPT
    pairs: list[tuple[Row, Row]]
    reference: np.ndarray
    beta: float
    batch_size: int
    seed: int
    pad_id: int
    dropout: float = 0.0
    nll: float = 0.0

    def __call__(self, step: int) -> StepLoss:
        pick = batch_indices(len(self.pairs), self.batch_size, step, self.seed)  # (B,)
        chosen = [self.pairs[i][0] for i in pick]
        rejected = [self.pairs[i][1] for i in pick]
        x, y = pad_batch(chosen + rejected, self.pad_id)  # (2B, T) each
        ref = np.concatenate([self.reference[pick, 0], self.reference[pick, 1]])  # (2B,)
        rng = np.random.default_rng([self.seed, STREAM_DROPOUT, step]) if self.dropout else None
        loss, grads, _ = preference_loss_and_grads(
            self.model,
            x,
            y,
            ref,
            self.beta,
            self.dropout,
            rng,
            nll=self.nll,
        )
        return StepLoss(loss, grads, x.size)


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class AlignConfig:
    """Everything a preference-tuning run needs (``numpylm align`` has one flag per field).

    Attributes:
        data: a JSON Lines file of ``{"prompt": ..., "chosen": ..., "rejected": ...}``.
        out: the run directory, as ``finetune``'s (a model directory, ``prompt_template.json``).
        model: the model to start from, which is also the frozen reference: a built-in name
            (default ``chat``), a model directory or a Hub id.
        template: the prompt template; None takes the model's own (``prompt_template.json``),
            or ``finetune.TEMPLATE`` if it has none.
        beta: how strongly the policy is held to the reference (TRL's default, 0.1).
        nll: the weight of fine-tuning's loss on the chosen answers, added to DPO's (RPO); 0,
            the default, is pure DPO.
        steps: optimiser steps in total; 0 runs ``epochs`` passes over the training pairs.
        epochs: passes over the training pairs when ``steps`` is 0.
        batch_size: pairs per step (each step reads 2 * batch_size answers).
        lr, min_lr, warmup, weight_decay, grad_clip: as in ``finetune.FinetuneConfig``.
        eval_every, save_every, val_fraction, seed, dtype, dropout: as there too.
    """

    data: str
    out: str
    model: str = "chat"
    template: str | None = None
    beta: float = 0.1
    nll: float = 0.0
    steps: int = 0
    epochs: float = 1.0
    batch_size: int = 16
    lr: float = 1e-4
    min_lr: float | None = None
    warmup: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 0
    save_every: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    dtype: str = "float32"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.template is not None:
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
        checks.finite_number("beta", self.beta)
        checks.finite_number("nll", self.nll)
        if self.lr == 0 or self.beta == 0 or (self.steps == 0 and self.epochs == 0):
            raise ValueError("lr, beta and epochs (when steps is 0) must be positive")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")


def align(
    cfg: AlignConfig, *, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> TrainResult:
    """Tune ``cfg.model`` towards the chosen answers of the pairs in ``cfg.data`` with DPO,
    checkpointing to ``cfg.out`` (the loop is ``train.run_steps``; checkpoints, Ctrl-C and
    resume are ``runs``'). The history's rows hold, besides the losses, the held-out pairs'
    ``val_margin``, ``val_accuracy``, ``val_chosen`` and ``val_rejected`` (``preference_figures``).

    With ``resume``, continue the run saved in ``cfg.out`` exactly where it stopped; the
    reference (``cfg.model``) is loaded again, and must be the model the run started from. A
    new run never overwrites anything in ``cfg.out``, nor writes into the model it reads;
    ``overwrite`` first deletes a numpylm run there, and refuses files numpylm did not write
    (``runs.open_run``). If standard output or error goes away, the run goes on silently
    (``runs.outlive_output``).

    Raises:
        DataError: a bad data file (see ``read_pairs``), or no pair fits the context.
        TrainingDiverged: the loss, the gradient or the weights became NaN or infinite.
        CheckpointError: as ``finetune``'s, or a reference whose weights are not the ones the
            run started from.
    """
    pairs = read_pairs(cfg.data)
    sha = sha256_file(Path(cfg.data))
    with (
        outlive_output(),
        open_run(
            Path(cfg.out),
            "align",
            resume=resume,
            data_sha256=sha,
            data=cfg.data,
            dtype=cfg.dtype,
            overwrite=overwrite,
            reads=[cfg.data, model_dir(cfg.model)],  # the reference is read on resume too
        ) as run,
    ):
        return _align(cfg, run, pairs, sha, progress)


def _align(
    cfg: AlignConfig, run: Checkpoint | None, pairs: list[Pair], sha: str, progress: bool
) -> TrainResult:
    """``align``, once the run directory is open (and locked)."""
    out = Path(cfg.out)
    reference, tokenizer = load_base(cfg.model, cfg.dtype)
    reference_sha = weights_sha256(reference)
    if run is not None:
        if run.state.get("reference_sha256") != reference_sha:
            raise CheckpointError(
                f"the reference model {cfg.model} is not the one this run started from (the "
                "sha256 of its weights differs from the one in trainer_state.json): resume "
                "with the original --model, or start a new run"
            )
        model = run.model
    else:  # the policy starts as a copy of the reference, which stays frozen
        copied = {k: v.copy() for k, v in reference.params.items()}
        model = GPT(reference.config, dtype=reference.dtype, params=copied)
    template = cfg.template or load_template(cfg.model) or TEMPLATE
    step, losses, history = (run.step, run.losses, run.history) if run else (0, [], [])
    elapsed = run.elapsed if run else 0.0

    train_pairs, val_pairs = split_examples(pairs, cfg.val_fraction, cfg.seed)
    n_ctx = model.config.n_ctx
    train_rows = encode_pairs(tokenizer, train_pairs, template, n_ctx, cfg.data)
    val_rows = encode_pairs(tokenizer, val_pairs, template, n_ctx, cfg.data)
    steps = count_steps(cfg.steps, cfg.epochs, len(train_rows), cfg.batch_size)
    plan = dataclasses.replace(
        cfg,
        template=template,
        steps=steps,
        warmup=min(cfg.warmup, steps),
        eval_every=cfg.eval_every or max(1, steps // 10),
    )

    c = model.config  # a step reads both answers of each pair, padded to the longest answer
    longest = max(len(ids) for pair in train_rows + val_rows for ids, _ in pair)
    memory.fits(
        memory.training_bytes(
            c.vocab_size,
            longest,
            c.n_layer,
            c.n_head,
            c.n_embd,
            batch_size=2 * cfg.batch_size,
            itemsize=model.dtype.itemsize,
            steps=steps,
        )
        + memory.model_bytes(c.vocab_size, c.n_ctx, c.n_layer, c.n_embd, model.dtype.itemsize),
        f"preference-tuning {model.num_params():,} parameters, and their frozen reference, on "
        f"batches of {cfg.batch_size} pairs of answers of up to {longest} tokens for "
        f"{steps:,} steps",
        "use a smaller --batch-size or fewer --steps (or a smaller model)",
    )
    pad = tokenizer.eot_id
    t0 = time.perf_counter()
    # The reference's log-probabilities never change: computed once, here, for every pair.
    ref_train = pair_logprobs(reference, train_rows, cfg.batch_size, pad)  # (n, 2)
    ref_val = pair_logprobs(reference, val_rows, cfg.batch_size, pad)
    ref_seconds = time.perf_counter() - t0
    del reference

    trainable = {k: model.params[k] for k in param_shapes(model.config)}
    optimizer = AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if run is not None:
        optimizer.load_state_dict(run.optimizer_state)
    else:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(out / TEMPLATE_FILE, {"template": template})

    def validate() -> dict[str, float]:
        policy = pair_logprobs(model, val_rows, cfg.batch_size, pad)
        return preference_figures(policy, ref_val, cfg.beta)

    def save(at: int) -> None:
        save_checkpoint(
            out,
            model,
            tokenizer,
            optimizer,
            {
                "kind": "align",
                "step": at,
                "args": {**dataclasses.asdict(plan), "data": str(Path(cfg.data).resolve())},
                "data_sha256": sha,
                "reference_sha256": reference_sha,
                "dtype": str(model.dtype),
                "elapsed": elapsed + (time.perf_counter() - started),
                "history": history,
                "losses": losses,
            },
        )

    if progress:
        from tqdm import tqdm

        tqdm.write(
            f"model: {model!r} (and its frozen copy, the reference)\n"
            f"data: {len(train_rows):,} training pairs, {len(val_rows):,} validation; "
            f"{plan.batch_size} pairs per step, {steps * plan.batch_size / len(train_rows):.2f} "
            f"epochs; beta {plan.beta}\n"
            f"the reference's log-probabilities of all {2 * (len(train_rows) + len(val_rows)):,} "
            f"answers: {ref_seconds:.1f} s\n"
            f"{'resuming at' if run else 'starting at'} step {step} of {steps} in {out}"
        )
    objective = Preference(
        model, train_rows, ref_train, cfg.beta, cfg.batch_size, cfg.seed, pad, cfg.dropout, cfg.nll
    )
    started = time.perf_counter()
    return run_steps(
        optimizer,
        plan,
        objective,
        validate,
        save,
        out=out,
        step=step,
        losses=losses,
        history=history,
        progress=progress,
    )


def resume_config(out: str | os.PathLike[str], **changes: Any) -> AlignConfig:
    """The ``AlignConfig`` a run in ``out`` was started with, with ``changes`` applied."""
    known = {f.name for f in dataclasses.fields(AlignConfig)}
    kept = {k: v for k, v in saved_args(out, "align").items() if k in known}
    return AlignConfig(**{**kept, **changes})
