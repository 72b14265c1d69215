"""How numpylm's small-model work slows down when other programs keep the cores busy, next to
PyTorch under the same load, for each way of choosing threads.

Run from the repository root (about four minutes on 2 cores). It starts two busy-looping
processes of its own for the loaded half, so run it when nothing else is measuring::

    python benchmarks/bench_busy.py
    python benchmarks/bench_busy.py --quick --markdown out.md --json out.json

The model has the built-in chat model's shapes (6 layers, 6 heads, 192 channels, vocabulary
2048, context 256; ``numpylm.load("chat")``'s weights for inference, ``GPT(config, seed=0)``
for training; ``transformers`` ``GPT2LMHeadModel`` loads the same weights). The work:

- **forward 16**: one forward pass over 16 tokens, all logits, no cache;
- **forward 128**: the same over 128 tokens (a prompt long enough for numpylm's own threads);
- **decode step**: one token at batch 1 with the KV cache holding 16 to 46 tokens;
- **training step**: batch 16 x 128 tokens, forward, loss, backward, clipping and AdamW, as
  ``numpylm train`` runs it (``bench_train.numpylm_step``; torch: ``bench_train.torch_step``).

Each is timed quiet, then under a fixed load: two processes running ``while True: pass``
(one per core of a 2-core machine; ``--load`` changes the number), started and killed by this
script. Ways of choosing threads, each in its own process (numpylm's variants share one):

- ``numpylm BLAS threads``: numpylm splits nothing itself (``parallel.set_threads(1)``);
  OpenBLAS uses its default threads, one per core. numpylm's default for a 16-token forward
  and a decode step (too few rows to split) and for ``numpylm train``'s default
  ``--threads 1`` (the whole batch in one Python thread);
- ``numpylm 1 BLAS thread``: the same under ``threadpoolctl.threadpool_limits(1)``;
- ``numpylm own threads``: numpylm splits the work over the cores itself, one BLAS thread per
  part: the THREADS backend (numpylm's default for a forward pass of 32 rows or more) and the
  training step sharded as ``numpylm train --threads N`` does it. A 16-token forward and a
  decode step have too few rows to split (that row would repeat ``BLAS threads``);
- ``torch N threads`` / ``torch 1 thread``: ``torch.set_num_threads``, under ``inference_mode``
  for inference.

The variants take turns for ``--rounds`` rounds; each figure is the median of every repeat of
every round, and "slowdown" is loaded / quiet. "Others' CPU" is the cores that processes other
than the measured one and this script's busy loops kept busy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_decode import machine_info, report
from bench_scaling import Contender
from threadpoolctl import threadpool_limits

WORKS = ("forward 16", "forward 128", "decode step", "training step")
REPEATS = {"forward 16": 30, "forward 128": 10, "decode step": 30, "training step": 3}
BATCH, T = 16, 128  # the training step's batch
# The command of one busy loop: it ends by itself soon after this script does, however that ends.
BUSY_LOOP = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    for _ in range(10**6): pass"

# --------------------------------------------------------------------------------------------
# Workers: one process per library, measuring the work the parent asks for.

Work = Callable[[], None]


def numpylm_works(model_dir: str, threads: int) -> dict[str, Callable[[str], list[float]]]:
    """For each variant of numpylm, a function timing ``REPEATS[work]`` runs of a work."""
    from bench_train import numpylm_step

    from numpylm import GPT
    from numpylm.models import parallel

    model = GPT.from_pretrained(model_dir)
    V = model.config.vocab_size
    batch = _batch(V)
    train = {shards: numpylm_step(model.config, shards) for shards in {1, threads}}

    def timed(work: str, own_threads: int) -> list[float]:
        parallel.set_threads(own_threads)  # 1: numpylm splits nothing itself
        if work == "decode step":
            cache = model.new_cache(capacity=16 + REPEATS[work] + 1)
            model(_ids(16, V), cache=cache, last_only=True)
            token = np.array([[1]])
            return _times(lambda: model(token, cache=cache, last_only=True), REPEATS[work])
        if work == "training step":
            return _times(lambda: train[own_threads](*batch), REPEATS[work])
        ids = _ids(int(work.split()[1]), V)
        return _times(lambda: model(ids), REPEATS[work])

    def blas_threads(work: str) -> list[float]:
        return timed(work, 1)

    def one_blas_thread(work: str) -> list[float]:
        with threadpool_limits(1, user_api="blas"):
            return timed(work, 1)

    def own_threads(work: str) -> list[float]:
        return timed(work, threads)

    return {
        "numpylm BLAS threads": blas_threads,
        "numpylm 1 BLAS thread": one_blas_thread,
        "numpylm own threads": own_threads,
    }


def torch_works(model_dir: str, threads: int) -> dict[str, Callable[[str], list[float]]]:
    import torch
    from bench_train import LR, torch_step
    from transformers import GPT2LMHeadModel

    from numpylm import GPT
    from numpylm.training.optim import AdamW

    torch.set_num_threads(threads)
    model = GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    V = model.config.vocab_size
    reference = GPT(GPT.from_pretrained(model_dir).config, seed=0)
    training_dir = tempfile.mkdtemp(prefix="numpylm-bench-")
    reference.save_pretrained(training_dir)
    train = torch_step(Path(training_dir), AdamW(reference.params, lr=LR).decay)
    batch = _batch(V)

    @torch.inference_mode()
    def timed(work: str) -> list[float]:
        if work == "decode step":
            out = model(torch.from_numpy(_ids(16, V)), use_cache=True)
            token = torch.tensor([[1]])
            past = out.past_key_values

            def step() -> None:
                model(token, past_key_values=past, use_cache=True)

            return _times(step, REPEATS[work])
        ids = torch.from_numpy(_ids(int(work.split()[1]), V))
        return _times(lambda: model(ids, use_cache=False), REPEATS[work])

    def measure(work: str) -> list[float]:
        torch.set_num_threads(threads)
        if work == "training step":
            return _times(lambda: train(*batch), REPEATS[work])
        return timed(work)

    return {f"torch {threads} thread{'s' if threads > 1 else ''}": measure}


def _ids(n: int, vocab: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, vocab, (1, n))


def _batch(vocab: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.random.default_rng(0).integers(0, vocab, (BATCH, T + 1))
    return np.ascontiguousarray(tokens[:, :-1]), np.ascontiguousarray(tokens[:, 1:])


def _times(work: Work, repeats: int) -> list[float]:
    work()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return times


def worker(who: str, model_dir: str, threads: int) -> None:
    """Answer each line ``variant<TAB>work`` on stdin with a JSON line of times (seconds)."""
    variants = (numpylm_works if who == "numpylm" else torch_works)(model_dir, threads)
    print("ready", flush=True)
    for line in sys.stdin:
        variant, work = line.rstrip("\n").split("\t")
        print(json.dumps(variants[variant](work)), flush=True)


# --------------------------------------------------------------------------------------------
# The run and its report.


def start_load(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]


def stop_load(loops: list[subprocess.Popen[bytes]]) -> None:
    for p in loops:
        p.kill()
    for p in loops:
        p.wait()


def run(threads: int, load: int, rounds: int, works: tuple[str, ...]) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine_info(), "threads": threads, "load": load}
    with tempfile.TemporaryDirectory(prefix="numpylm-bench-") as model_dir:
        code = "import sys, numpylm; numpylm.load('chat')[0].save_pretrained(sys.argv[1])"
        subprocess.run([sys.executable, "-c", code, model_dir], check=True)
        workers = {
            "numpylm": Contender(__file__, "numpylm", model_dir, str(threads)),
            "torch": Contender(__file__, "torch", model_dir, str(threads)),
            "torch1": Contender(__file__, "torch", model_dir, "1"),
        }
        variants = {
            "numpylm BLAS threads": "numpylm",
            "numpylm 1 BLAS thread": "numpylm",
            "numpylm own threads": "numpylm",
            f"torch {threads} threads": "torch",
            "torch 1 thread": "torch1",
        }
        table: dict[str, Any] = {}
        loops: list[subprocess.Popen[bytes]] = []
        try:
            for phase in ("quiet", "loaded"):
                if phase == "loaded":
                    loops = start_load(load)
                    time.sleep(1)  # let them take the cores
                for r in range(rounds):
                    order = list(variants) if r % 2 == 0 else list(variants)[::-1]
                    for work in works:
                        for variant in order:
                            if variant == "numpylm own threads" and work in _UNSPLIT:
                                continue
                            print(f"  {phase} {r + 1}: {variant}: {work}", file=sys.stderr)
                            pids = tuple(p.pid for p in loops)
                            times, others = workers[variants[variant]].ask(
                                f"{variant}\t{work}", pids
                            )
                            cell = table.setdefault(work, {}).setdefault(variant, {})
                            cell.setdefault(phase, []).extend(times)
                            key = f"{phase}_others"
                            cell[key] = max(cell.get(key, 0.0), others)
                if phase == "loaded":
                    stop_load(loops)
                    loops = []
        finally:
            stop_load(loops)
            for w in workers.values():
                w.close()
    for cells in table.values():
        for cell in cells.values():
            for phase in ("quiet", "loaded"):
                cell[f"{phase}_ms"] = 1e3 * statistics.median(cell[phase])
            cell["slowdown"] = cell["loaded_ms"] / cell["quiet_ms"]
    results["table"] = table
    results["machine"]["load_average_end"] = os.getloadavg()[0]
    return results


_UNSPLIT = ("forward 16", "decode step")  # too few rows for numpylm's own threads


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "| work | threads | quiet (ms) | loaded (ms) | slowdown | others' CPU quiet / loaded |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for work, cells in r["table"].items():
        for variant, c in cells.items():
            lines.append(
                f"| {work} | {variant} | {c['quiet_ms']:.2f} | {c['loaded_ms']:.2f} | "
                f"{c['slowdown']:.1f}x | {c['quiet_others']:.2f} / {c['loaded_others']:.2f} |"
            )
    lines += [
        "",
        f"Chat-model shapes (6 layers, 6 heads, 192 channels, vocabulary 2048), float32; "
        f"loaded: {r['load']} busy-looping processes; medians; {r['threads']} threads where "
        "a variant uses several.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; NumPy {m['numpy']} with "
        f"{m.get('numpy_blas', '?')}; torch {m.get('torch', '-')}; load average "
        f"{m['load_average_start']:.2f} at start, {m['load_average_end']:.2f} at end.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1], argv[2], int(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer repeats")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy loops")
    parser.add_argument("--rounds", type=int, default=2, help="variants take turns this often")
    parser.add_argument("--only", nargs="+", choices=WORKS, default=list(WORKS))
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    if min(args.threads, args.load, args.rounds) < 1:
        parser.error("--threads, --load and --rounds must be at least 1")
    if args.quick:
        args.rounds = 1
    results = run(args.threads, args.load, args.rounds, tuple(args.only))
    table = markdown(results)
    report(table, results, args)


if __name__ == "__main__":
    main()
