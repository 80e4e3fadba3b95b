"""Wall-clock and peak memory of predicting a graph and attending over it, across lengths.

Each case runs in a fresh Python process (``python -m sparsebench.bench.timing CASE_JSON``), so
its peak memory is its own: on CPU a second process (see :func:`measure_case`) resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``) just before one warm end-to-end call and
reads ``VmHWM`` after it; on CUDA the timing process reads ``torch.cuda.max_memory_allocated``
around that call. Every timed part gets warm-up calls,
then repeats, and reports the median and the spread (interquartile range); CUDA timings are
synchronised. Compilation (FlexAttention) is timed on the first call and reported apart, never
inside steady-state figures.

Inputs: at n <= 512 with 4 heads of 64 the queries, keys and values of the bundled
``shakespeare-mlm`` model on held-out text; otherwise the seeded generator of
:func:`sparsebench.datasets.synthetic` (local and content structure, a first-token sink).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["DENSE", "measure_case", "run_case", "stopwatch"]

#: Dense baselines (no graph): name -> description.
DENSE = {
    "sdpa": "torch scaled_dot_product_attention, softmax, no mask",
    "dense_entmax": "exact α-entmax over every pair, row slabs (execute path 'dense', full graph)",
    "entmax15_full": (
        "entmax.entmax15 over the full score matrix of each head (the package, as is; heads one "
        "after another so that n = 8192 fits in memory)"
    ),
    "xformers": "xformers memory_efficient_attention, softmax (CUDA only)",
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stopwatch(
    fn: Callable[[], Any], *, device: str = "cpu", warmup: int = 1, repeats: int = 5
) -> dict[str, float]:
    """Median, minimum and interquartile range of ``repeats`` timed calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    qs = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "iqr_s": qs[2] - qs[0]}


def _inputs(n: int, heads: int, dim: int, device: str, seed: int):
    if n <= 512 and heads == 4 and dim == 64:
        try:
            from sparsebench.datasets.shakespeare import load_model, load_tokenizer
            from sparsebench.datasets.train import token_streams

            model = load_model("shakespeare-mlm")
            ids = token_streams(load_tokenizer())["eval"][0][:n].view(1, n)
            cap: list = []
            with torch.no_grad():
                model(ids, capture=cap)
            q, k, v = cap[len(cap) // 2]
            return q.to(device), k.to(device), v.to(device), "shakespeare-mlm"
        except Exception:  # no bundled weights or text: fall back to the generator
            pass
    from sparsebench.datasets import synthetic

    d = synthetic(num_seqs=1, layers=1, heads=heads, n=n, d=dim, min_length=n, seed=seed)
    lay = d.layer(0)
    return lay.q.to(device), lay.k.to(device), lay.v.to(device), "generator"


def _peak_begin(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return float("nan")
    return _status_mb("VmRSS")


def _peak_end(device: str, base: float) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20 - base
    return _status_mb("VmHWM") - base


def _peak(fn: Callable[[], Any], device: str) -> float:
    """Peak extra memory (MB) of one call of ``fn``."""
    base = _peak_begin(device)
    fn()
    _sync(device)
    return _peak_end(device, base)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Measure one case in this process (use :func:`measure_case` for memory figures)."""
    from sparsebench import methods
    from sparsebench.bench.execute import auto_path, block_plan, execute
    from sparsebench.methods import Band, Graph

    device = case.get("device", "cpu")
    n, heads, dim = case["n"], case.get("heads", 8), case.get("dim", 64)
    normalizer = case.get("normalizer", "entmax")
    repeats, warmup = case.get("repeats", 5), case.get("warmup", 1)
    q, k, v, source = _inputs(n, heads, dim, device, case.get("seed", 0))
    rec: dict[str, Any] = {**case, "source": source, "threads": torch.get_num_threads()}
    name = case["method"]
    memory_only = case.get("measure") == "memory"
    if name in DENSE:
        full = Graph((1, heads, n, n), [Band(-n, n)])
        if name == "sdpa":
            fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
        elif name == "dense_entmax":
            fn = lambda: execute(q, k, v, full, path="dense")  # noqa: E731
        elif name == "entmax15_full":
            from entmax import entmax15

            from sparsebench.methods import attention_logits

            def fn():
                return torch.cat(
                    [
                        entmax15(attention_logits(q[:, h : h + 1], k[:, h : h + 1]), dim=-1)
                        @ v[:, h : h + 1]
                        for h in range(q.shape[1])
                    ],
                    dim=1,
                )
        else:
            if not device.startswith("cuda"):
                raise NotImplementedError("xformers attention kernels run on CUDA only")
            import xformers.ops as xops

            qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
            fn = lambda: xops.memory_efficient_attention(qt, kt, vt)  # noqa: E731
        with torch.no_grad():
            if memory_only:
                fn()  # warm: lazy initialisation is not the call's memory
                rec["peak_mb"] = _peak(fn, device)
                return rec
            rec["kernel"] = stopwatch(fn, device=device, warmup=warmup, repeats=repeats)
            if device.startswith("cuda"):
                rec["peak_mb"] = _peak(fn, device)
        rec["end_to_end"] = rec["kernel"]
        return rec

    m = methods.create(name, **case.get("params", {}))
    if m.learns:
        from sparsebench.datasets import synthetic

        train = synthetic(num_seqs=8, layers=1, heads=heads, n=min(n, 512), d=dim, seed=1)
        t0 = time.perf_counter()
        m = m.fit(train.split("train"), 0)
        rec["fit_s"] = time.perf_counter() - t0
    path = case.get("path", "auto")
    bs = case.get("block_size", 128)

    def end_to_end():
        gr = m.predict(q, k)
        pl = block_plan(gr, bs) if plan is not None else None
        return execute(q, k, v, gr, normalizer=normalizer, path=path, block_size=bs, plan=pl)

    with torch.no_grad():
        graph = m.predict(q, k)
        rec["path"] = auto_path(graph) if path == "auto" else path  # the path that runs
        uses_layout = rec["path"] in ("block", "flex")
        plan = block_plan(graph, bs) if uses_layout else None
        if memory_only:
            end_to_end()  # warm (compiles FlexAttention)
            rec["peak_mb"] = _peak(end_to_end, device)
            return rec
        rec["predict"] = stopwatch(
            lambda: m.predict(q, k), device=device, warmup=0, repeats=repeats
        )
        rec["sparsity"] = 1 - float(graph.num_edges().sum()) / (heads * n * n)
        if plan is not None:
            rec["layout"] = stopwatch(
                lambda: block_plan(graph, bs), device=device, warmup=0, repeats=max(1, repeats // 2)
            )
            rec["block_density"] = plan.density
        kw = {"normalizer": normalizer, "path": path, "block_size": bs, "plan": plan}
        t0 = time.perf_counter()
        execute(q, k, v, graph, **kw)
        _sync(device)
        first = time.perf_counter() - t0
        rec["kernel"] = stopwatch(
            lambda: execute(q, k, v, graph, **kw), device=device, warmup=warmup, repeats=repeats
        )
        if path == "flex":
            rec["compile_s"] = max(0.0, first - rec["kernel"]["median_s"])

        rec["end_to_end"] = stopwatch(end_to_end, device=device, warmup=0, repeats=repeats)
        if device.startswith("cuda"):
            rec["peak_mb"] = _peak(end_to_end, device)
    return rec


def _in_fresh_process(case: dict[str, Any], timeout: float, env: dict) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "sparsebench.bench.timing", json.dumps(case)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**case, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        return {**case, "error": lines[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_case(case: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Time a case in a fresh process, and on CPU take its peak memory in a second one.

    The memory process sets glibc's mmap threshold to 64 KiB, so every sizeable buffer is
    mapped when allocated and returned when freed: the peak-RSS delta of the measured call then
    counts its whole working set, not only what the allocator could not reuse from the warm-up.
    (Timing runs without it: page faults on every allocation would slow the kernels.) Errors
    come back as ``{"error": ...}``.
    """
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    rec = _in_fresh_process(case, timeout, env)
    if "error" in rec or case.get("device", "cpu").startswith("cuda"):
        return rec
    mem_env = {**env, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    mem = _in_fresh_process({**case, "measure": "memory"}, timeout, mem_env)
    if "error" in mem:
        return {**rec, "error": f"memory: {mem['error']}"}
    return {**rec, "peak_mb": mem["peak_mb"]}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(run_case(json.loads(sys.argv[1]))) + "\n")
