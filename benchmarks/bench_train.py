"""How long one training step takes in numpylm, next to PyTorch on the same model.

Run from the repository root (about a minute on 2 cores)::

    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --threads 2 --steps 20 --json out.json

One training step is what ``numpylm train`` does per batch: the forward pass, the loss, the
backward pass, gradient clipping and an AdamW update. The model is the issue's fixed small
configuration (4 layers, 4 heads, 128 channels, context 128, batch 16, vocabulary 1024; change
it with the flags). Both contenders start from the same float32 weights
(``GPT(config, seed=0)``, saved with ``save_pretrained`` and loaded by ``transformers``
``GPT2LMHeadModel``), see the same batches and run with the same number of threads (NumPy's
OpenBLAS through ``threadpoolctl``, torch through ``torch.set_num_threads``), in one process,
alternating, so that a busy machine slows both alike. As a check that they compute the same
thing, the first step's losses are printed side by side.

Reported: milliseconds per step, best and median of ``--steps`` timed steps (after warm-up),
and numpylm's time split into forward, loss, backward and optimiser.
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
from pathlib import Path
from typing import Any

import numpy as np

from numpylm import GPT, GPTConfig
from numpylm.layers import cross_entropy
from numpylm.optim import AdamW, clip_grad_norm

MAX_NORM = 1.0
LR = 1e-3


def numpylm_step(model: GPT, opt: AdamW) -> Callable[[np.ndarray, np.ndarray], float]:
    def step(ids: np.ndarray, targets: np.ndarray) -> float:
        loss, grads = model.loss_and_grads(ids, targets)
        clip_grad_norm(grads, MAX_NORM)
        opt.step(grads)
        return loss

    return step


def numpylm_phases(
    model: GPT, opt: AdamW, ids: np.ndarray, targets: np.ndarray
) -> dict[str, float]:
    """Milliseconds of each part of one step (best of 5): where the time goes."""
    phases: dict[str, list[float]] = {"forward": [], "loss": [], "step (all)": [], "optimiser": []}
    for _ in range(5):
        t0 = time.perf_counter()
        logits = model._forward(ids, acts={})
        t1 = time.perf_counter()
        cross_entropy(logits, targets)
        t2 = time.perf_counter()
        _, grads = model.loss_and_grads(ids, targets)
        t3 = time.perf_counter()
        clip_grad_norm(grads, MAX_NORM)
        opt.step(grads, lr=0.0)
        t4 = time.perf_counter()
        phases["forward"].append(t1 - t0)
        phases["loss"].append(t2 - t1)
        phases["step (all)"].append(t3 - t2 + t4 - t3)
        phases["optimiser"].append(t4 - t3)
    best = {k: 1e3 * min(v) for k, v in phases.items()}
    best["backward"] = best["step (all)"] - best["forward"] - best["loss"] - best["optimiser"]
    return best


def torch_step(directory: Path, decay_names: set[str]) -> Callable[[np.ndarray, np.ndarray], float]:
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(directory, torch_dtype=torch.float32)
    model.train()
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
            logits.view(-1, logits.shape[-1]), torch.from_numpy(targets).view(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        opt.step()
        return float(loss.detach())

    return step


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
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    config = GPTConfig(
        vocab_size=args.vocab_size,
        n_ctx=args.n_ctx,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
    )
    model = GPT(config, seed=0)
    opt = AdamW(model.params, lr=LR)
    steps: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
    tmp = tempfile.TemporaryDirectory()
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.threads)
        model.save_pretrained(tmp.name)
        steps["torch"] = torch_step(Path(tmp.name), opt.decay)
    steps["numpylm"] = numpylm_step(model, opt)

    rng = np.random.default_rng(0)
    B, T = args.batch_size, args.n_ctx
    batches = [
        rng.integers(0, config.vocab_size, (B, T + 1)) for _ in range(args.warmup + args.steps)
    ]
    times: dict[str, list[float]] = {name: [] for name in steps}
    first_loss: dict[str, float] = {}
    for n, batch in enumerate(batches):
        ids, targets = np.ascontiguousarray(batch[:, :-1]), np.ascontiguousarray(batch[:, 1:])
        for name, step in steps.items():  # alternate, so machine noise hits both alike
            t0 = time.perf_counter()
            loss = step(ids, targets)
            dt = time.perf_counter() - t0
            if n == 0:
                first_loss[name] = loss
            if n >= args.warmup:
                times[name].append(1e3 * dt)
    ids, targets = batches[0][:, :-1], batches[0][:, 1:]
    phases = numpylm_phases(model, opt, np.ascontiguousarray(ids), np.ascontiguousarray(targets))
    tmp.cleanup()

    result: dict[str, Any] = {
        "config": {**vars(config), "batch_size": B},
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "numpy": np.__version__,
        "first_loss": first_loss,
        "ms_per_step": {
            name: {"best": min(t), "median": statistics.median(t)} for name, t in times.items()
        },
        "numpylm_phases_ms": phases,
    }
    if "torch" in times:
        import torch

        result["torch"] = torch.__version__
        ratio = (
            result["ms_per_step"]["numpylm"]["median"] / result["ms_per_step"]["torch"]["median"]
        )
        result["numpylm_over_torch_median"] = ratio

    print(
        f"config: {args.n_layer} layers, {args.n_head} heads, {args.n_embd} channels, context "
        f"{T}, batch {B}, vocab {args.vocab_size}; {args.threads} threads; load average "
        + ", ".join(f"{x:.2f}" for x in result["load_average"])
    )
    print("first-step loss: " + ", ".join(f"{k} {v:.6f}" for k, v in first_loss.items()))
    for name, t in result["ms_per_step"].items():
        print(f"{name:>8}: {t['median']:7.1f} ms/step median, {t['best']:7.1f} best")
    if "numpylm_over_torch_median" in result:
        print(f"numpylm / torch (median): {result['numpylm_over_torch_median']:.2f}x")
    print("numpylm phases (best of 5, ms): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
