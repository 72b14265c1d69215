"""How long one training step takes in numpylm, next to PyTorch on the same model.

Run from the repository root (about a minute on 2 cores)::

    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --threads 2 --steps 20 --json out.json

One training step is what ``numpylm train`` does per batch: the forward pass, the loss, the
backward pass, gradient clipping and an AdamW update. The model is the issue's fixed small
configuration (4 layers, 4 heads, 128 channels, context 128, batch 16, vocabulary 1024; change
it with the flags). Every contender starts from the same float32 weights
(``GPT(config, seed=0)``, saved with ``save_pretrained`` and loaded by ``transformers``
``GPT2LMHeadModel``), sees the same batches and uses the same number of threads, in one
process, taking turns step by step so that a busy machine slows all of them alike. As a check
that they compute the same thing, the first step's losses are printed side by side.

numpylm runs in two ways:

- ``numpylm``: the whole batch in one Python thread, BLAS (OpenBLAS) using ``--threads``.
- ``numpylm xN shards``: as ``numpylm train --threads N`` runs it, the batch split into N
  shards computed at once by N threads (NumPy releases Python's lock inside its loops), one
  BLAS thread each, so the elementwise work runs on every core too.

torch uses ``torch.set_num_threads(--threads)``. Each numpylm contender takes turns with a torch
of its own (never with the other numpylm, whose spinning BLAS threads would slow it). Reported:
milliseconds per step, best and median of ``--steps`` timed steps (after warm-up), each
numpylm's ratio to the torch it took turns with, and numpylm's step split into forward, loss,
backward and optimiser (whole batch, one thread of Python).

With ``--data FILE`` it also runs ``numpylm train``'s own loop (``training.train``, a learned
``bpe:VOCAB`` tokenizer, ``--threads`` shards) on that text for ``--warmup + --steps`` steps,
each followed by a torch step, and reports ``train_step`` as the loop calls it::

    python benchmarks/bench_train.py --threads 2 --steps 20 --data input.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from numpylm import GPT, GPTConfig
from numpylm.layers import cross_entropy
from numpylm.models.gpt2 import backward
from numpylm.training.optim import AdamW, clip_grad_norm
from numpylm.training.train import keep_freed_memory, sharded_loss_and_grads

MAX_NORM = 1.0
LR = 1e-3
Step = Callable[[np.ndarray, np.ndarray], float]


def numpylm_step(config: GPTConfig, shards: int) -> Step:
    """A training step of a fresh ``GPT(config, seed=0)``, with the batch in ``shards``."""
    keep_freed_memory()  # as numpylm train does (run_steps)
    model = GPT(config, seed=0)
    opt = AdamW(model.params, lr=LR)
    pool = ThreadPoolExecutor(shards) if shards > 1 else None

    def step(ids: np.ndarray, targets: np.ndarray) -> float:
        if pool is None:
            loss, grads = model.loss_and_grads(ids, targets)
        else:
            with threadpool_limits(1, user_api="blas"):  # one BLAS thread per shard
                loss, grads = sharded_loss_and_grads(model, ids, targets, pool, shards)
        clip_grad_norm(grads, MAX_NORM)
        opt.step(grads)
        return loss

    return step


def numpylm_phases(config: GPTConfig, ids: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Milliseconds of each part of one step (best of 5): where the time goes."""
    model = GPT(config, seed=0)
    opt = AdamW(model.params, lr=LR)
    times: dict[str, list[float]] = {"forward": [], "loss": [], "all": [], "optimiser": []}
    for _ in range(6):
        t0 = time.perf_counter()
        logits = model(ids, backend=backward.recording(backward.Tape()))
        t1 = time.perf_counter()
        cross_entropy(logits, targets)
        t2 = time.perf_counter()
        _, grads = model.loss_and_grads(ids, targets)
        t3 = time.perf_counter()
        clip_grad_norm(grads, MAX_NORM)
        opt.step(grads)
        t4 = time.perf_counter()
        for name, dt in (("forward", t1 - t0), ("loss", t2 - t1), ("all", t4 - t2)):
            times[name].append(dt)
        times["optimiser"].append(t4 - t3)
    best = {k: 1e3 * min(v[1:]) for k, v in times.items()}  # the first call warms up
    best["backward"] = best["all"] - best["forward"] - best["loss"] - best["optimiser"]
    return best


def torch_step(directory: Path, decay_names: set[str]) -> Step:
    """The same step in PyTorch: ``GPT2LMHeadModel``, autograd, ``torch.optim.AdamW`` with the
    same decay groups, ``clip_grad_norm_``."""
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(directory, torch_dtype=torch.float32)
    model.train()  # dropout is 0 in the config numpylm writes
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # the tied lm_head appears once, as wte
        (decay if name.removeprefix("transformer.") in decay_names else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    def step(ids: np.ndarray, targets: np.ndarray) -> float:
        logits = model(torch.from_numpy(ids)).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        opt.step()
        return loss.item()

    return step


def real_loop(args: argparse.Namespace, torch_dir: Path | None, decay: set[str]) -> dict[str, Any]:
    """``numpylm train``'s own loop, ``training.train``, on ``--data`` with the bench's shapes
    and ``--threads``, for ``--warmup + --steps`` steps (a learned ``bpe:VOCAB`` tokenizer, one
    evaluation at the start and one at the end, one checkpoint). Each of its steps is followed
    by a torch step on a batch of the same shape (taking turns, as above). Milliseconds:
    ``train_step`` as the loop calls it (what its progress bar measures), and the loop's wall
    time per step without torch's."""
    from numpylm.training import train as training

    step_ms: list[float] = []
    torch_ms: list[float] = []
    peer = torch_step(torch_dir, decay) if torch_dir is not None else None
    rng = np.random.default_rng(1)
    plain_step, plain_run_steps = training.train_step, training.run_steps
    wall: list[float] = []

    def timed_step(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = plain_step(*a, **k)
        step_ms.append(1e3 * (time.perf_counter() - t0))
        if peer is not None:
            batch = rng.integers(0, args.vocab_size, (args.batch_size, args.n_ctx + 1))
            t0 = time.perf_counter()
            peer(np.ascontiguousarray(batch[:, :-1]), np.ascontiguousarray(batch[:, 1:]))
            torch_ms.append(1e3 * (time.perf_counter() - t0))
        return out

    def timed_run_steps(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = plain_run_steps(*a, **k)
        wall.append(1e3 * (time.perf_counter() - t0))
        return out

    n = args.warmup + args.steps
    training.train_step, training.run_steps = timed_step, timed_run_steps
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = training.TrainConfig(
                data=str(args.data),
                out=str(Path(out) / "run"),
                tokenizer=f"bpe:{args.vocab_size}",
                n_layer=args.n_layer,
                n_head=args.n_head,
                n_embd=args.n_embd,
                n_ctx=args.n_ctx,
                batch_size=args.batch_size,
                steps=n,
                eval_every=n,
                threads=args.threads,
            )
            training.train(cfg, progress=False)
    finally:
        training.train_step, training.run_steps = plain_step, plain_run_steps
    result: dict[str, Any] = {
        "train_step": _summary(step_ms[args.warmup :]),
        "wall_ms_per_step": (wall[0] - sum(torch_ms)) / n,
    }
    if torch_ms:
        result["torch"] = _summary(torch_ms[args.warmup :])
    return result


def _summary(ms: list[float]) -> dict[str, float]:
    return {"best": min(ms), "median": statistics.median(ms)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-torch", action="store_true", help="time numpylm only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--data", type=Path, help="also time numpylm train's own loop on this text file"
    )
    args = parser.parse_args(argv)

    threadpool_limits(args.threads)
    config = GPTConfig(
        vocab_size=args.vocab_size,
        n_ctx=args.n_ctx,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
    )
    steps: dict[str, Step] = {}
    tmp = tempfile.TemporaryDirectory()
    torch_dir = Path(tmp.name)
    decay: set[str] = set()
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.threads)
        reference = GPT(config, seed=0)
        reference.save_pretrained(torch_dir)
        decay = AdamW(reference.params, lr=LR).decay
    steps["numpylm"] = numpylm_step(config, 1)
    if args.threads > 1:
        steps[f"numpylm x{args.threads} shards"] = numpylm_step(config, args.threads)

    B, T = args.batch_size, args.n_ctx
    times: dict[str, list[float]] = {}
    torch_times: dict[str, list[float]] = {}
    first_loss: dict[str, float] = {}
    # Each numpylm contender takes turns with its own torch, never with the other numpylm: the
    # whole batch leaves OpenBLAS's worker threads spinning for a while after each call, which
    # would slow whatever runs next on a 2-core machine (measured: the sharded step 140 ms
    # after torch, 150-190 ms after the whole batch).
    for name, step in steps.items():
        pair = {name: step}
        if not args.no_torch:
            pair["torch"] = torch_step(torch_dir, decay)
        rng = np.random.default_rng(0)
        for n in range(args.warmup + args.steps):
            batch = rng.integers(0, config.vocab_size, (B, T + 1))
            ids, targets = np.ascontiguousarray(batch[:, :-1]), np.ascontiguousarray(batch[:, 1:])
            for who, f in pair.items():  # take turns, so machine noise hits both alike
                t0 = time.perf_counter()
                loss = f(ids, targets)
                dt = time.perf_counter() - t0
                if n == 0:
                    first_loss[who] = loss
                if n >= args.warmup:
                    (times if who == name else torch_times).setdefault(name, []).append(1e3 * dt)
    loop = real_loop(args, torch_dir if not args.no_torch else None, decay) if args.data else None
    rng = np.random.default_rng(0)
    batch = rng.integers(0, config.vocab_size, (B, T + 1))
    ids, targets = np.ascontiguousarray(batch[:, :-1]), np.ascontiguousarray(batch[:, 1:])
    phases = numpylm_phases(config, ids, targets)
    tmp.cleanup()

    result: dict[str, Any] = {
        "config": {**vars(config), "batch_size": B},
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "numpy": np.__version__,
        "first_loss": first_loss,
        "ms_per_step": {name: _summary(t) for name, t in times.items()},
        "torch_ms_per_step": {name: _summary(t) for name, t in torch_times.items()},
        "numpylm_phases_ms": phases,
    }
    if loop:
        result["real_loop"] = loop
    print(
        f"config: {args.n_layer} layers, {args.n_head} heads, {args.n_embd} channels, context "
        f"{T}, batch {B}, vocab {args.vocab_size}; {args.threads} threads; load average "
        + ", ".join(f"{x:.2f}" for x in result["load_average"])
    )
    print("first-step loss: " + ", ".join(f"{k} {v:.6f}" for k, v in first_loss.items()))
    for name, t in result["ms_per_step"].items():
        line = f"{name:>18}: {t['median']:7.1f} ms/step median, {t['best']:7.1f} best"
        if name in torch_times:
            tt = result["torch_ms_per_step"][name]
            ratio = t["median"] / tt["median"]
            line += (
                f"; torch in turn {tt['median']:.1f} median, {tt['best']:.1f} best: {ratio:.2f}x"
            )
        print(line)
    if loop:
        print(
            f"real loop (numpylm train --threads {args.threads} on {args.data.name}): train_step "
            f"{loop['train_step']['median']:.1f} ms median, {loop['train_step']['best']:.1f} "
            f"best; the loop's wall time {loop['wall_ms_per_step']:.1f} ms/step "
            f"(with its evaluations at the start and end, and a checkpoint)"
            + (
                f"; torch in turn {loop['torch']['median']:.1f} median: "
                f"{loop['train_step']['median'] / loop['torch']['median']:.2f}x"
                if "torch" in loop
                else ""
            )
        )
    print("numpylm phases, one thread of Python (best of 5, ms): ", end="")
    print(", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
