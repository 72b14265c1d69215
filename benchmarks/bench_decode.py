"""How fast numpylm writes text, and how much memory it needs, next to Hugging Face
``transformers`` on torch CPU and next to what the machine's memory allows: GPT-2 124M, or
SmolLM2-135M-Instruct (the Llama family).

Run from the repository root (about four minutes on 2 cores; ``--quick`` takes about 30 s)::

    python benchmarks/bench_decode.py
    python benchmarks/bench_decode.py --quick
    python benchmarks/bench_decode.py --model smollm2 --json out.json --markdown out.md

What is measured, all in one run, with the same float32 weights for everyone, saved with
``save_pretrained`` and loaded back by both libraries, so both compute the same numbers and
must write the same tokens. ``--model gpt2`` (the default): random GPT-2 124M weights
(``GPT(GPTConfig(), seed=0)``). ``--model smollm2``: SmolLM2-135M-Instruct's GGUF file
(``numpylm download smollm2``), dequantised to float32 by numpylm; its **load** row also times
each library reading the GGUF file itself, as a user would:

- **decode**: batch 1, a 16-token prompt, then 128 greedy tokens; tokens/s is new tokens over
  the wall time of the whole generation (the prompt's forward pass included). Four contenders:
  numpylm with its KV cache, numpylm without it (the whole sequence again every step, as
  picoGPT does), and ``GPT2LMHeadModel`` with its cache and with ``use_cache=False``.
- **prefill**: one forward pass over a 512-token prompt (filling a cache, logits of the last
  position only), in tokens/s.
- **peak RSS**: each contender runs in a fresh subprocess (load the checkpoint, run, read
  ``ru_maxrss``), so every figure includes the interpreter, the libraries and the weights.
- **memory bandwidth**: the best of several probes (``work_bandwidth``): OpenBLAS's
  matrix-vector product ``x @ M`` over matrices of 256 MiB to 1 GiB, with every thread, and (the
  older, lower figure) one thread per core summing its half of a 1 GiB array. Decoding one token
  has to read every weight once (~498 MB for GPT-2 in float32, ~540 MB for SmolLM2), so
  bandwidth / weight bytes is the fastest any decoder can go, and "share" says how close each
  one gets. The probes run before the first round and after each round: the table's share is
  over the best of them all, and a line below it gives each round's share over the probes
  that bracket that round (a shared machine's bandwidth drifts from minute to minute).
- **the weights' products alone**: once per round, numpylm's own matrix products, every
  matrix a decoding step multiplies by (``forward_matrices``) and nothing else: the fastest
  numpylm's decoding could go if the rest of a step (norms, attention over the cache, the
  Python between the calls) took no time.

Every timing is the best of ``--repeats`` runs, and the contenders take turns for ``--rounds``
rounds (a fresh process each time), each keeping its best round: other work on the machine
only ever slows a run down, and a shared machine's speed drifts over minutes, so taking turns
gives every contender the same chances. The load average and every round's figure are printed
so that a busy or drifting machine is visible in the results.

To benchmark NumPy's OpenBLAS on a machine that sets OPENBLAS_CORETYPE (a work-around some
images set for old OpenBLAS builds), unset it for this command only::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_decode.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CONTENDERS = ("numpylm", "numpylm-nocache", "transformers", "transformers-nocache")
PREFILL_CONTENDERS = ("numpylm", "transformers")


@dataclass(frozen=True)
class Settings:
    prompt_len: int = 16
    new_tokens: int = 128
    prefill_len: int = 512
    repeats: int = 3
    threads: int = os.cpu_count() or 1
    rounds: int = 3
    model: str = "gpt2"
    gguf: str = ""


# --------------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one JSON line.


def _best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Run ``fn`` ``repeats`` times; the best wall time, all of them, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, result


def _prompt(n: int, vocab: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n)


def work_numpylm(model_dir: str, task: str, s: Settings) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from numpylm.models import parallel

    # The same thread count as torch.set_num_threads for transformers: BLAS's own threads for
    # decode steps, numpylm's for a prompt (numpylm.models.parallel)
    threadpool_limits(s.threads, user_api="blas")
    parallel.set_threads(s.threads)
    if task == "load":
        best, times, _ = _best_time(lambda: numpylm_class(s.gguf).from_pretrained(s.gguf), 1)
        return {"seconds": best}
    model = numpylm_class(model_dir).from_pretrained(model_dir)
    V = model.config.vocab_size
    if task == "products":
        ws = forward_matrices(model)
        xs = {n: np.ones((1, n), dtype=model.dtype) for n in {w.shape[0] for w in ws}}
        best, times, _ = _best_time(lambda: [xs[w.shape[0]] @ w for w in ws], 5 * s.repeats)
        gb_per_s = sum(w.nbytes for w in ws) / best / 1e9
        return {"tokens_per_s": 1 / best, "gb_per_s": gb_per_s, "times": times}
    if task == "prefill":
        ids = _prompt(s.prefill_len, V, seed=1)

        def prefill() -> None:
            model(ids, cache=model.new_cache(), last_only=True)

        best, times, _ = _best_time(prefill, s.repeats)
        return {"tokens_per_s": s.prefill_len / best, "times": times}

    use_cache = task == "decode"
    prompt = [int(i) for i in _prompt(s.prompt_len, V, seed=0)]

    def decode() -> list[int]:
        ids = list(prompt)
        cache = model.new_cache() if use_cache else None
        new = ids
        for _ in range(s.new_tokens):
            if cache is None:
                logits = model(np.asarray(ids), last_only=True)  # the whole sequence again
            else:
                logits = model(np.asarray(new), cache=cache, last_only=True)
            ids.append(int(np.argmax(logits[-1])))
            new = ids[-1:]
        return ids[len(prompt) :]

    best, times, out = _best_time(decode, s.repeats if use_cache else 1)
    end_rss = rss_mb()[1]  # with the model still loaded
    return {"tokens_per_s": s.new_tokens / best, "times": times, "ids": out, "end_rss_mb": end_rss}


def forward_matrices(model: Any) -> list[np.ndarray]:
    """Every matrix a decoding step multiplies by, as the forward pass multiplies it
    (``x @ w``, a view: nothing copied, the same memory layout), the blocks' in order and then
    the LM head: GPT-2 stores (in, out) weights, the Llama family (out, in) ones. The tables
    that are only looked up (GPT-2's ``wpe``, an untied Llama's embedding) are left out."""
    p = model.params
    if "wte.weight" in p:
        blocks = [w for n, w in p.items() if w.ndim == 2 and n not in ("wte.weight", "wpe.weight")]
        return [*blocks, p["wte.weight"].T]
    tables = ("embed_tokens.weight", "lm_head.weight")
    head = p.get("lm_head.weight", p["embed_tokens.weight"])
    return [*(w.T for n, w in p.items() if w.ndim == 2 and n not in tables), head.T]


def work_transformers(model_dir: str, task: str, s: Settings) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(s.threads)
    if task == "load":
        path = Path(s.gguf)

        def load() -> Any:
            return AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, torch_dtype=torch.float32
            )

        best, times, _ = _best_time(load, 1)
        return {"seconds": best}
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    V = model.config.vocab_size
    with torch.inference_mode():
        if task == "prefill":
            ids_t = torch.from_numpy(_prompt(s.prefill_len, V, seed=1))[None]

            def prefill() -> None:
                model(ids_t, use_cache=True, logits_to_keep=1)

            best, times, _ = _best_time(prefill, s.repeats)
            return {"tokens_per_s": s.prefill_len / best, "times": times}

        use_cache = task == "decode"
        prompt = torch.from_numpy(_prompt(s.prompt_len, V, seed=0))[None]

        def decode() -> list[int]:
            ids, past, new = prompt, None, prompt
            out = []
            for _ in range(s.new_tokens):
                if use_cache:
                    r = model(new, past_key_values=past, use_cache=True, logits_to_keep=1)
                    past = r.past_key_values
                else:
                    r = model(ids, use_cache=False, logits_to_keep=1)
                new = r.logits[:, -1].argmax(-1, keepdim=True)
                ids = torch.cat([ids, new], dim=1)
                out.append(int(new))
            return out

        best, times, out = _best_time(decode, s.repeats if use_cache else 1)
        end_rss = rss_mb()[1]  # with the model still loaded
    return {"tokens_per_s": s.new_tokens / best, "times": times, "ids": out, "end_rss_mb": end_rss}


# The probes of the memory bandwidth, each (name, MiB read per run). The best of them is the
# figure: a probe can only read slower than memory allows, never faster.
BANDWIDTH_PROBES = (("sum", 1024), ("gemv", 256), ("gemv", 512), ("gemv", 1024))


def work_bandwidth(s: Settings) -> dict[str, Any]:
    """How fast the machine reads memory with ``s.threads`` threads, by several probes (the
    best is the figure; each is the best of ``5 * repeats`` runs):

    - ``sum``: one Python thread per core, each summing its part of a 1 GiB array (NumPy
      releases the GIL inside ``sum``). numpylm's probe until issue 18; NumPy's pairwise
      summation does more work per float than a matrix-vector product, so one core sums
      slower than memory streams, and this is a lower bound.
    - ``gemv``: ``x @ M`` for a (768, N) float32 matrix of 256, 512 or 1024 MiB, by OpenBLAS
      with ``s.threads`` threads: the operation a decoding step is made of, on a matrix laid
      out as GPT-2's LM head. It reads every float of ``M`` once, does two flops per float
      (far below what the cores compute) and writes only N floats, so it runs as fast as
      memory delivers. Its best over the sizes is the read bandwidth a decoder built on BLAS
      can attain. The matrices are at least 8 times the last-level cache (32 MiB on the AMD
      EPYC measured): on that machine, in the same runs, 128 MiB read 57-71 GB/s where 256
      and 512 MiB read 51-59, a sign that some cache still helped there.
    """
    probes = {"sum": _probe_sum, "gemv": _probe_gemv}
    figures = {f"{name} {mib} MiB": probes[name](mib, s) for name, mib in BANDWIDTH_PROBES}
    return {"gb_per_s": max(figures.values()), "probes": figures}


def _probe_sum(mib: int, s: Settings) -> float:
    data = np.ones(mib * 2**20 // 4, dtype=np.float32)  # touched, so the pages exist
    parts = np.array_split(data, s.threads)
    with ThreadPoolExecutor(s.threads) as pool:
        best, _, _ = _best_time(lambda: list(pool.map(np.sum, parts)), 5 * s.repeats)
    return data.nbytes / best / 1e9


def _probe_gemv(mib: int, s: Settings) -> float:
    from threadpoolctl import threadpool_limits

    m = np.ones((768, mib * 2**20 // (4 * 768)), dtype=np.float32)
    x = np.ones(768, dtype=np.float32)
    with threadpool_limits(s.threads, user_api="blas"):
        best, _, _ = _best_time(lambda: x @ m, 5 * s.repeats)
    return m.nbytes / best / 1e9


def worker(argv: list[str]) -> None:
    who, task, model_dir, settings_json = argv
    s = Settings(**json.loads(settings_json))
    if who == "bandwidth":
        result = work_bandwidth(s)
    elif who == "numpylm":
        result = work_numpylm(model_dir, task, s)
    else:
        result = work_transformers(model_dir, task, s)
    result["peak_rss_mb"] = rss_mb()[0]
    print(json.dumps(result))


def rss_mb() -> tuple[float, float]:
    """This process's peak and current resident memory, in MB.

    Linux's ``VmHWM`` (the peak) starts afresh when the worker's program starts, where
    ``ru_maxrss`` would also count the benchmark process the worker was forked from."""
    try:
        status = dict(
            line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
        )
        peak, now = (int(status[k].split()[0]) for k in ("VmHWM", "VmRSS"))  # KiB
    except (OSError, KeyError, ValueError):
        peak = now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return peak * 1024 / 1e6, now * 1024 / 1e6


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (Linux), or 0 where unknown."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    jiffies = [int(f) for f in fields]
    idle = jiffies[3] + jiffies[4]  # idle + iowait
    return (sum(jiffies) - idle) / os.sysconf("SC_CLK_TCK")


def run_worker(who: str, task: str, model_dir: str, s: Settings) -> dict[str, Any]:
    """Run one measurement in a fresh process; also note how busy the rest of the machine was
    meanwhile (in cores), since other work makes every figure slower."""
    cmd = [sys.executable, __file__, "--worker", who, task, model_dir, json.dumps(vars(s))]
    busy0, child0 = _busy_seconds(), _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{who} {task} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    others = (_busy_seconds() - busy0) - (_children_cpu() - child0)
    result["other_cpu_cores"] = max(0.0, others / wall)
    return result


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------------------------
# The run and its report.


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "load_average_start": os.getloadavg()[0],
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if blas:
            b = blas[0]
            info["numpy_blas"] = (
                f"{b['internal_api']} {b['version']} ({b.get('architecture')} kernels, "
                f"{b['num_threads']} threads)"
            )
    except ImportError:
        info["numpy_blas"] = "unknown (pip install threadpoolctl to see it)"
    try:
        import torch
        import transformers

        info["torch"] = torch.__version__
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def numpylm_class(path: str) -> Any:
    """numpylm's model class for a model directory (by its ``config.json``) or a GGUF file."""
    from numpylm import GPT
    from numpylm.models.llama import Llama

    if path.endswith(".gguf"):
        return Llama
    model_type = json.loads((Path(path) / "config.json").read_text())["model_type"]
    return GPT if model_type == "gpt2" else Llama


def weight_bytes_per_token(model_dir: str) -> int:
    """Bytes of float32 weights one decoding step reads: every stored tensor once, except
    GPT-2's position table, of which it reads a single row (a tied LM head is stored once, as
    the token embedding, and read whole by the head)."""
    from numpylm.io.checkpoint import read_safetensors

    tensors = read_safetensors(Path(model_dir) / "model.safetensors")
    n = sum(t.size for name, t in tensors.items() if not name.endswith("wpe.weight"))
    wpe = [t for name, t in tensors.items() if name.endswith("wpe.weight")]
    return 4 * (n + (wpe[0].shape[1] if wpe else 0))


def make_checkpoint(model_dir: str, s: Settings) -> None:
    """Save the float32 weights both libraries load (in a subprocess, so this process stays
    small): random GPT-2 124M, or SmolLM2's GGUF file dequantised by numpylm."""
    if s.model == "gpt2":
        code = (
            "import sys; from numpylm import GPT, GPTConfig; "
            "GPT(GPTConfig(), seed=0).save_pretrained(sys.argv[1])"
        )
    else:
        code = (
            "import sys; from numpylm.models.llama import Llama; "
            "Llama.from_pretrained(sys.argv[2]).save_pretrained(sys.argv[1])"
        )
    subprocess.run([sys.executable, "-c", code, model_dir, s.gguf], check=True)


def run(s: Settings, contenders: tuple[str, ...]) -> dict[str, Any]:
    info = machine_info()
    results: dict[str, Any] = {"machine": info, "settings": vars(s), "decode": {}, "prefill": {}}
    with tempfile.TemporaryDirectory(prefix="numpylm-bench-") as model_dir:
        make_checkpoint(model_dir, s)
        per_token = weight_bytes_per_token(model_dir)
        bandwidth = [run_worker("bandwidth", "-", model_dir, s)]
        results["weight_mb_per_token"] = per_token / 1e6
        # The machine's speed drifts over minutes (its neighbours change), so the contenders
        # take turns, round after round, and each keeps its best round. The slow no-cache
        # decoders run in the first round only.
        for r in range(s.rounds):
            for name in contenders:
                who, _, nocache = name.partition("-")
                tasks = [("decode", "decode-nocache" if nocache else "decode")]
                if name in PREFILL_CONTENDERS:
                    tasks.append(("prefill", "prefill"))
                for kind, task in tasks:
                    if nocache and r > 0:
                        continue
                    print(f"  round {r + 1}: {name} {kind} ...", file=sys.stderr, flush=True)
                    result = run_worker(who, task, model_dir, s)
                    _keep_best(results[kind], name, result)
                if s.gguf and not nocache and r == 0:
                    print(f"  {name} load ...", file=sys.stderr, flush=True)
                    results.setdefault("load", {})[name] = run_worker(who, "load", model_dir, s)
            if "numpylm" in contenders:  # the ceiling of numpylm's matrix products, each round
                print(f"  round {r + 1}: the weights' products alone ...", file=sys.stderr)
                results.setdefault("products", []).append(
                    run_worker("numpylm", "products", model_dir, s)
                )
            # after every round: the probes before and after a round bracket it (round_shares)
            bandwidth.append(run_worker("bandwidth", "-", model_dir, s))
    # The best of all the probes is what the machine can do: the headline limit.
    results["bandwidth_gb_per_s"] = max(b["gb_per_s"] for b in bandwidth)
    results["bandwidth_runs"] = bandwidth
    results["bandwidth_probes"] = {  # each probe's better run
        name: max(b["probes"][name] for b in bandwidth) for name in bandwidth[0]["probes"]
    }
    limit = results["bandwidth_gb_per_s"] * 1e9 / per_token
    results["decode_limit_tokens_per_s"] = limit
    for r in results["decode"].values():
        r["share_of_limit"] = r["tokens_per_s"] / limit
        r["round_shares"] = round_shares(r["rounds"], bandwidth, per_token)
    info["load_average_end"] = os.getloadavg()[0]
    ids = [r["ids"] for r in results["decode"].values()]
    results["same_tokens"] = all(i == ids[0] for i in ids)
    return results


def round_shares(
    rounds: list[float], bandwidth: list[dict[str, Any]], per_token: int
) -> list[float]:
    """Each round's tokens/s over the limit of that round: the better of the probes run just
    before and just after it. A shared machine's bandwidth drifts over minutes (26 to 49 GB/s
    in one evening on the AMD EPYC of docs/benchmarks.md), and a decoder's best round and the
    probes' best run need not fall in the same minutes; within a round they do."""
    return [
        tps / (max(bandwidth[i]["gb_per_s"], bandwidth[i + 1]["gb_per_s"]) * 1e9 / per_token)
        for i, tps in enumerate(rounds)
    ]


def _keep_best(table: dict[str, Any], name: str, result: dict[str, Any]) -> None:
    """Keep the faster of ``result`` and the round already in ``table[name]``, with every
    round's tokens/s, the highest peak RSS and the busiest others' CPU of all rounds."""
    old = table.get(name)
    if old is None:
        table[name] = result | {"rounds": [result["tokens_per_s"]]}
        return
    best = result if result["tokens_per_s"] > old["tokens_per_s"] else old
    table[name] = best | {
        "rounds": [*old["rounds"], result["tokens_per_s"]],
        "peak_rss_mb": max(old["peak_rss_mb"], result["peak_rss_mb"]),
        "other_cpu_cores": max(old["other_cpu_cores"], result["other_cpu_cores"]),
    }


def markdown(r: dict[str, Any]) -> str:
    s, m = r["settings"], r["machine"]
    ref = r["decode"].get("transformers", {}).get("tokens_per_s")
    ref_prefill = r["prefill"].get("transformers", {}).get("tokens_per_s")
    title = "GPT-2 124M" if s["model"] == "gpt2" else "SmolLM2-135M-Instruct"
    lines = [
        f"{title}, float32, batch 1; decode: {s['prompt_len']}-token prompt + "
        f"{s['new_tokens']} greedy tokens; prefill: {s['prefill_len']} tokens; "
        f"best of {s['repeats']} in each of {s['rounds']} rounds; {s['threads']} thread(s).",
        "",
        "| contender | decode tok/s | vs transformers | share of limit | prefill tok/s "
        "| vs transformers | peak RSS (MB) | RSS at end (MB) | others' CPU (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, d in r["decode"].items():
        p = r["prefill"].get(name)
        runs = [d] if p is None else [d, p]
        cells = [
            name,
            f"{d['tokens_per_s']:.1f}",
            f"{d['tokens_per_s'] / ref:.2f}x" if ref else "-",
            f"{d['share_of_limit']:.0%}",
            f"{p['tokens_per_s']:.0f}" if p else "",
            f"{p['tokens_per_s'] / ref_prefill:.2f}x" if p and ref_prefill else "",
            f"{max(x['peak_rss_mb'] for x in runs):.0f}",
            f"{d['end_rss_mb']:.0f}",
            " / ".join(f"{x['other_cpu_cores']:.2f}" for x in runs),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    rounds = [
        f"{name} {kind} {' / '.join(f'{x:.1f}' for x in t['rounds'])}"
        for kind in ("decode", "prefill")
        for name, t in r[kind].items()
        if len(t["rounds"]) > 1
    ]
    if rounds:
        lines += ["", "Tokens/s in each round: " + "; ".join(rounds) + "."]
    products, own = r.get("products"), r["decode"].get("numpylm")
    if products and own:
        best = max(products, key=lambda x: x["tokens_per_s"])
        of_products = [d / x["tokens_per_s"] for d, x in zip(own["rounds"], products, strict=True)]
        lines += [
            "",
            "The weights' products alone (every matrix a decoding step multiplies, `x @ w` in the "
            f"forward's order and nothing else): {best['tokens_per_s']:.1f} tok/s at best, "
            f"{best['gb_per_s']:.1f} GB/s, {best['gb_per_s'] / r['bandwidth_gb_per_s']:.0%} "
            "of the best probe; numpylm's decode is "
            + " / ".join(f"{x:.0%}" for x in of_products)
            + " of them, round by round.",
        ]
    shares = [
        f"{name} {' / '.join(f'{x:.0%}' for x in d['round_shares'])} (median "
        f"{statistics.median(d['round_shares']):.0%})"
        for name, d in r["decode"].items()
        if len(d["round_shares"]) > 1
    ]
    if shares:
        lines += [
            "",
            "Share of the limit round by round (each round's tokens/s over the better of the "
            "probes run just before and just after it; GB/s: "
            + " / ".join(f"{b['gb_per_s']:.1f}" for b in r["bandwidth_runs"])
            + "): "
            + "; ".join(shares)
            + ".",
        ]
    if r.get("load"):
        lines += [
            "",
            "Loading the GGUF file into float32 (seconds; peak RSS in MB): "
            + "; ".join(
                f"{n} {x['seconds']:.1f} s, {x['peak_rss_mb']:.0f} MB" for n, x in r["load"].items()
            )
            + ".",
        ]
    lines += [
        "",
        f"Memory bandwidth ({s['threads']} thread(s)): {r['bandwidth_gb_per_s']:.1f} GB/s, the "
        "best of the probes (GB/s, the best of a run before the first round and one after each): "
        + ", ".join(f"{n} {g:.1f}" for n, g in r["bandwidth_probes"].items())
        + "; "
        f"weights read per token: {r['weight_mb_per_token']:.1f} MB; decode limit: "
        f"{r['decode_limit_tokens_per_s']:.0f} tok/s. "
        f"Same greedy tokens from every contender: {'yes' if r['same_tokens'] else 'NO'}.",
        "",
        "Peak RSS: the larger of the decode and prefill processes (each loads the checkpoint "
        "itself); RSS at end: after decoding. Others' CPU: cores that other processes kept "
        "busy during the decode / prefill run (anything above ~0.1 slows the figures).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']} "
        f"with {m.get('numpy_blas', '?')}; torch {m.get('torch', '-')}, transformers "
        f"{m.get('transformers', '-')}; OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}; load "
        f"average {m['load_average_start']:.2f} at start, {m['load_average_end']:.2f} at end.",
    ]
    return "\n".join(lines) + "\n"


def report(table: str, results: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the Markdown ``table``; write it to ``--markdown`` and ``results`` to ``--json``
    where they were asked for (every benchmark script ends this way)."""
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run to check the setup")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prefill-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of these")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--rounds", type=int, default=3, help="contenders take turns this many times; best kept"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=CONTENDERS,
        default=list(CONTENDERS),
        help="run these contenders only",
    )
    parser.add_argument(
        "--model",
        choices=("gpt2", "smollm2"),
        default="gpt2",
        help="random GPT-2 124M weights, or SmolLM2-135M-Instruct (numpylm download smollm2)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    gguf = ""
    if args.model == "smollm2":
        from numpylm.download import find

        try:
            gguf = str(find("smollm2"))
        except FileNotFoundError as e:
            parser.error(str(e))
    s = Settings(
        args.prompt_len,
        args.new_tokens,
        args.prefill_len,
        args.repeats,
        args.threads,
        args.rounds,
        args.model,
        gguf,
    )
    if args.quick:
        s = Settings(s.prompt_len, 32, 128, 1, s.threads, 1, s.model, s.gguf)
    for name, value in (
        ("--new-tokens", s.new_tokens),
        ("--repeats", s.repeats),
        ("--rounds", s.rounds),
    ):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    if not 1 <= s.prompt_len or s.prompt_len + s.new_tokens > 1024 or s.prefill_len > 1024:
        parser.error("the prompt plus the new tokens, and the prefill, must fit in 1024 tokens")
    results = run(s, tuple(args.only))
    table = markdown(results)
    report(table, results, args)


if __name__ == "__main__":
    main()
