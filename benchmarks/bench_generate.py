"""How fast numpylm writes with the built-in chat model, next to Hugging Face ``transformers``:
one answer token by token, and the essay's "ask 100 times" as one batch.

Run from the repository root (about a minute on 2 cores; ``--quick`` about 15 s)::

    python benchmarks/bench_generate.py
    python benchmarks/bench_generate.py --quick
    python benchmarks/bench_generate.py --json out.json --markdown out.md

The model is ``numpylm.load("chat")`` (GPT-2's architecture: 6 layers, 6 heads, 192 channels, a
2,048-token vocabulary, 256 positions). numpylm saves it with ``save_pretrained`` and
``transformers.GPT2LMHeadModel`` loads that directory, so both compute the same numbers. Two
workloads, each from the tokens of one prompt:

- **batch 1, 200 greedy tokens**: ``numpylm.generate(model, ids, 200, temperature=0)`` against
  ``model.generate(do_sample=False, max_new_tokens=200)``; both must write the same tokens.
- **100 samples x 32 tokens**: ``numpylm.generate_batch(model, [ids], 32, num_samples=100,
  seed=0)`` against ``model.generate(do_sample=True, num_return_sequences=100,
  max_new_tokens=32, top_k=0)``: both sample from the model's own distribution
  (``transformers`` would otherwise keep its default top-k of 50), 100 rows in one batch.

Neither may stop early (no end-of-text id for numpylm, ``min_new_tokens`` for ``transformers``).
torch uses ``torch.set_num_threads(--threads)`` under ``inference_mode``; NumPy's BLAS and
numpylm's own threads use the same number. The two libraries run in one process and take turns,
``--repeats`` times per workload after a warm-up, so a busy moment slows both alike. Reported:
seconds per generation, median and best, the ratio of the medians (transformers' time over
numpylm's: above 1 means numpylm is faster), the machine, its load average and the cores other
processes kept busy while each workload ran (above ~0.1 the figures are slowed).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_decode import _busy_seconds, machine_info, report

PROMPT = "Who was the first president?"


def own_cpu() -> float:
    """CPU seconds this process has used (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def contenders(threads: int) -> dict[str, dict[str, Callable[[], Any]]]:
    """For each workload, a generation by numpylm and by transformers, each returning its ids."""
    import torch
    from threadpoolctl import threadpool_limits
    from transformers import GPT2LMHeadModel

    import numpylm
    from numpylm.models import parallel

    threadpool_limits(threads, user_api="blas")
    parallel.set_threads(threads)
    torch.set_num_threads(threads)
    model, tokenizer = numpylm.load("chat")
    ids = tokenizer.encode(PROMPT)
    directory = tempfile.mkdtemp(prefix="numpylm-bench-")
    model.save_pretrained(directory)
    hf = GPT2LMHeadModel.from_pretrained(directory, torch_dtype=torch.float32).eval()
    prompt = torch.tensor([ids])
    common = {"pad_token_id": 0, "eos_token_id": None}

    def hf_generate(n: int, **options: Any) -> list[list[int]]:
        with torch.inference_mode():
            out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, **common, **options)
        return [row[len(ids) :] for row in out.tolist()]

    return {
        "built-in chat, batch 1, 200 greedy tokens": {
            "numpylm": lambda: [numpylm.generate(model, ids, 200, temperature=0)[len(ids) :]],
            "transformers": lambda: hf_generate(200, do_sample=False),
        },
        "built-in chat, 100 samples x 32 tokens": {
            "numpylm": lambda: [
                s[len(ids) :] for s in numpylm.generate_batch(model, [ids], 32, num_samples=100)
            ],
            "transformers": lambda: hf_generate(
                32, do_sample=True, num_return_sequences=100, top_k=0
            ),
        },
    }


def measure(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Any]:
    """Time each contender ``repeats`` times, taking turns, after one warm-up run each."""
    out = {name: fn() for name, fn in runs.items()}  # warm-up; the ids they write
    times: dict[str, list[float]] = {name: [] for name in runs}
    busy0, cpu0, t0 = _busy_seconds(), own_cpu(), time.perf_counter()
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    wall = time.perf_counter() - t0
    others = max(0.0, ((_busy_seconds() - busy0) - (own_cpu() - cpu0)) / wall)
    shapes = {name: [len(o), len(o[0])] for name, o in out.items()}
    result: dict[str, Any] = {
        name: {"median_s": statistics.median(t), "best_s": min(t), "times_s": t}
        for name, t in times.items()
    }
    result["others_cpu_cores"] = others
    result["shapes"] = shapes
    if len(out["numpylm"]) == 1:  # greedy: both must write the same tokens
        result["same_tokens"] = [int(i) for i in out["numpylm"][0]] == out["transformers"][0]
    result["ratio"] = result["transformers"]["median_s"] / result["numpylm"]["median_s"]
    return result


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Built-in chat model (6 layers, 6 heads, 192 channels, vocabulary 2,048), float32; "
        f"{r['threads']} thread(s); median and best of {r['repeats']} runs, the libraries "
        "taking turns.",
        "",
        "| workload | numpylm s (median / best) | transformers s (median / best) "
        "| numpylm speed vs transformers | others' CPU (cores) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, w in r["workloads"].items():
        n, t = w["numpylm"], w["transformers"]
        lines.append(
            f"| {name} | {n['median_s']:.3f} / {n['best_s']:.3f} | {t['median_s']:.3f} / "
            f"{t['best_s']:.3f} | **{w['ratio']:.2f}x** | {w['others_cpu_cores']:.2f} |"
        )
    same = [w["same_tokens"] for w in r["workloads"].values() if "same_tokens" in w]
    lines += [
        "",
        f"Same greedy tokens from both: {'yes' if all(same) else 'NO'}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']} "
        f"with {m.get('numpy_blas', '?')}; torch {m.get('torch', '-')}, transformers "
        f"{m.get('transformers', '-')}; load average {m['load_average_start']:.2f} at start, "
        f"{m['load_average_end']:.2f} at end.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs each instead of 15")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per contender")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, got {repeats}")
    info = machine_info()
    results: dict[str, Any] = {"machine": info, "threads": args.threads, "repeats": repeats}
    results["workloads"] = {}
    for name, runs in contenders(args.threads).items():
        print(f"  {name} ...", file=sys.stderr, flush=True)
        results["workloads"][name] = measure(runs, repeats)
    info["load_average_end"] = os.getloadavg()[0]
    table = markdown(results)
    report(table, results, args)


if __name__ == "__main__":
    main()
