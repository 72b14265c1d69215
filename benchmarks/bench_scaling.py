"""How the cost of a decoding step grows with the work: GPT-2 124M tokens/s against the number
of tokens already in the KV cache and against the batch size, numpylm next to ``transformers``.

Run from the repository root (about four minutes on 2 cores; ``--quick`` about one)::

    python benchmarks/bench_scaling.py
    python benchmarks/bench_scaling.py --quick
    python benchmarks/bench_scaling.py --markdown out.md --plot scaling.svg --json r.json

Both libraries load the same float32 weights (``GPT(GPTConfig(), seed=0)`` saved with
``save_pretrained``; ``transformers`` loads it as ``GPT2LMHeadModel``), with the same number of
threads (numpylm's own and OpenBLAS's; ``torch.set_num_threads``), torch under
``inference_mode`` with ``use_cache=True``. What is timed is one greedy decoding *step*, one new
token per sequence through the model with its KV cache, at each point of two sweeps:

- **context**: batch 1, the cache holding N tokens, N in 16 ... 1024. The cache is filled with
  a prompt of N - 10 tokens outside the timing, two steps warm up, and the next eight are
  timed: the last of them writes position N (GPT-2's context holds 1024).
- **batch**: B sequences decoded together, B in 1 ... 64, at the same context of 16 tokens.

tokens/s = B / the median step time. Each library runs in its own process, loaded once; the
contenders take turns at every point, for ``--rounds`` rounds, and the median is over every
timed step of every round. A memory-bandwidth probe (``bench_decode.work_bandwidth``) runs
before and after: a step must read every weight once (498 MB), so bandwidth / 498 MB is the
most steps per second any decoder can make, the ceiling of the flat part of the curves.
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
from pathlib import Path
from typing import Any

import numpy as np
from bench_decode import (
    Settings,
    _busy_seconds,
    machine_info,
    make_checkpoint,
    report,
    weight_bytes_per_token,
    work_bandwidth,
)

CONTEXTS = (16, 32, 64, 128, 256, 512, 1024)
BATCHES = (1, 2, 4, 8, 16, 32, 64)
CONTENDERS = ("numpylm", "transformers")
WARMUP, STEPS = 2, 8  # untimed and timed steps at each point
BATCH_CONTEXT = 16  # the context of the batch sweep

# --------------------------------------------------------------------------------------------
# Workers: one process per library, loaded once, measuring the points the parent asks for.


def numpylm_stepper(model_dir: str, threads: int) -> Any:
    from threadpoolctl import threadpool_limits

    from numpylm import GPT
    from numpylm.models import parallel

    threadpool_limits(threads, user_api="blas")
    parallel.set_threads(threads)
    model = GPT.from_pretrained(model_dir)

    def measure(batch: int, context: int) -> list[float]:
        prompt = _prompt(batch, context - WARMUP - STEPS, model.config.vocab_size)
        cache = model.new_cache(batch, capacity=context)  # room for every step: no regrowth
        logits = model(prompt, cache=cache, last_only=True)  # (B, 1, V)
        times = []
        for i in range(WARMUP + STEPS):
            t0 = time.perf_counter()
            new = np.argmax(logits[:, -1], axis=-1)[:, None]  # (B, 1) greedy tokens
            logits = model(new, cache=cache, last_only=True)
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
        return times

    return measure


def transformers_stepper(model_dir: str, threads: int) -> Any:
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(threads)
    model = GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()

    @torch.inference_mode()
    def measure(batch: int, context: int) -> list[float]:
        prompt = torch.from_numpy(_prompt(batch, context - WARMUP - STEPS, model.config.vocab_size))
        out = model(prompt, use_cache=True, logits_to_keep=1)
        times = []
        for i in range(WARMUP + STEPS):
            t0 = time.perf_counter()
            new = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1) greedy tokens
            out = model(new, past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
        return times

    return measure


def _prompt(batch: int, length: int, vocab: int) -> np.ndarray:
    return np.random.default_rng(length * 100 + batch).integers(0, vocab, (batch, length))


def worker(who: str, model_dir: str, threads: int) -> None:
    """Answer each line ``batch context`` on stdin with a JSON line of step times."""
    measure = (numpylm_stepper if who == "numpylm" else transformers_stepper)(model_dir, threads)
    print("ready", flush=True)
    for line in sys.stdin:
        batch, context = (int(x) for x in line.split())
        print(json.dumps(measure(batch, context)), flush=True)


class Contender:
    """A worker process (this file or another, with ``--worker`` and ``args``) answering one
    JSON line per line it is sent, and the CPU time it uses (to tell its work from others')."""

    def __init__(self, script: str, *args: str) -> None:
        cmd = [sys.executable, script, "--worker", *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        if self.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the worker {args} failed to start")

    def ask(self, line: str, ours: tuple[int, ...] = ()) -> tuple[Any, float]:
        """The worker's answer to ``line``, and the cores that processes other than the worker
        and ``ours`` (process ids) kept busy meanwhile."""
        pids = (self.proc.pid, *ours)
        busy0, own0, t0 = _busy_seconds(), cpu_seconds(pids), time.perf_counter()
        self.stdin.write(line + "\n")
        self.stdin.flush()
        answer = json.loads(self.stdout.readline())
        wall = time.perf_counter() - t0
        others = (_busy_seconds() - busy0) - (cpu_seconds(pids) - own0)
        return answer, max(0.0, others / wall)

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=60)


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """The CPU time (user + system) the processes ``pids`` have used so far (Linux)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# The run and its report.


def run(threads: int, rounds: int, contexts: tuple[int, ...], batches: tuple[int, ...]) -> dict:
    points = [(1, n) for n in contexts] + [(b, BATCH_CONTEXT) for b in batches if b > 1]
    results: dict[str, Any] = {"machine": machine_info(), "threads": threads, "rounds": rounds}
    probe = Settings(threads=threads)
    bandwidth = [work_bandwidth(probe)["gb_per_s"]]
    times: dict[str, dict[tuple[int, int], list[float]]] = {c: {} for c in CONTENDERS}
    others: dict[tuple[int, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="numpylm-bench-") as model_dir:
        make_checkpoint(model_dir, probe)
        results["weight_mb_per_step"] = weight_bytes_per_token(model_dir) / 1e6
        workers = {c: Contender(__file__, c, model_dir, str(threads)) for c in CONTENDERS}
        try:
            for r in range(rounds):
                for point in points:
                    order = CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]  # take turns
                    for name in order:
                        print(f"  round {r + 1}: {name} B={point[0]} N={point[1]}", file=sys.stderr)
                        t, busy = workers[name].ask(f"{point[0]} {point[1]}")
                        times[name].setdefault(point, []).extend(t)
                        others[point] = max(others.get(point, 0.0), busy)
        finally:
            for w in workers.values():
                w.close()
    bandwidth.append(work_bandwidth(probe)["gb_per_s"])
    results["bandwidth_gb_per_s"] = max(bandwidth)
    results["bandwidth_runs"] = bandwidth
    results["machine"]["load_average_end"] = os.getloadavg()[0]
    results["points"] = [
        {
            "batch": b,
            "context": n,
            "others_cpu_cores": others[(b, n)],
            **{
                name: {
                    "median_ms": 1e3 * statistics.median(times[name][(b, n)]),
                    "tokens_per_s": b / statistics.median(times[name][(b, n)]),
                    "step_ms": [1e3 * t for t in times[name][(b, n)]],
                }
                for name in CONTENDERS
            },
        }
        for b, n in points
    ]
    return results


def sweep(r: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The points of one sweep: ``context`` (batch 1) or ``batch`` (context 16)."""
    if kind == "context":
        return [p for p in r["points"] if p["batch"] == 1]
    return [p for p in r["points"] if p["context"] == BATCH_CONTEXT]


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    limit = r["bandwidth_gb_per_s"] * 1e3 / r["weight_mb_per_step"]
    lines = []
    for kind, label in (("context", "tokens in the cache (N)"), ("batch", "batch (B)")):
        lines += [
            f"| {label} | numpylm tok/s | transformers tok/s | numpylm / transformers "
            "| numpylm ms/step | transformers ms/step | others' CPU (cores) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in sweep(r, kind):
            a, b = p["numpylm"], p["transformers"]
            cells = [
                str(p[kind]),
                f"{a['tokens_per_s']:.1f}",
                f"{b['tokens_per_s']:.1f}",
                f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x",
                f"{a['median_ms']:.1f}",
                f"{b['median_ms']:.1f}",
                f"{p['others_cpu_cores']:.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        f"GPT-2 124M float32, greedy steps with the KV cache, {r['threads']} thread(s); medians "
        f"of {STEPS} timed steps in each of {r['rounds']} rounds in which the contenders took "
        f"turns; the batch sweep at a context of {BATCH_CONTEXT} tokens. Memory bandwidth "
        f"{r['bandwidth_gb_per_s']:.1f} GB/s (runs: "
        + ", ".join(f"{x:.1f}" for x in r["bandwidth_runs"])
        + f"); weights read per step {r['weight_mb_per_step']:.1f} MB: at most {limit:.0f} "
        "steps/s.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; NumPy {m['numpy']} with "
        f"{m.get('numpy_blas', '?')}; torch {m.get('torch', '-')}, transformers "
        f"{m.get('transformers', '-')}; load average {m['load_average_start']:.2f} at start, "
        f"{m['load_average_end']:.2f} at end.",
    ]
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limit = r["bandwidth_gb_per_s"] * 1e3 / r["weight_mb_per_step"]  # steps/s
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind in zip(axes, ("context", "batch"), strict=True):
        points = sweep(r, kind)
        x = [p[kind] for p in points]
        for name, style in (("numpylm", "o-"), ("transformers", "s--")):
            ax.plot(x, [p[name]["tokens_per_s"] for p in points], style, label=name)
        ceiling = [limit * (p["batch"]) for p in points]  # the weights read once per step
        ax.plot(x, ceiling, ":", color="grey", label="reading the weights once per step")
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(v) for v in x])
        ax.grid(alpha=0.3)
        ax.set_ylabel("tokens/s")
    axes[0].set_xlabel("tokens already in the KV cache (batch 1)")
    axes[0].set_ylim(bottom=0)
    axes[1].set_xlabel(f"batch size (context {BATCH_CONTEXT} tokens)")
    axes[1].set_yscale("log")
    axes[1].legend()
    fig.suptitle(f"GPT-2 124M float32 decoding, {r['threads']} threads, {r['machine']['cpu']}")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1], argv[2], int(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, three points a sweep")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3, help="contenders take turns this often")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument("--plot", type=Path, help="also draw the curves here (.svg or .png)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be at least 1")
    contexts, batches = CONTEXTS, BATCHES
    if args.quick:
        contexts, batches, args.rounds = (16, 128, 1024), (1, 8, 64), 1
    results = run(args.threads, args.rounds, contexts, batches)
    table = markdown(results)
    report(table, results, args)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
