"""Wall-clock and peak memory, each case in a fresh process: the one speed harness.

Two suites share the runner (:func:`measure_case`):

* ``execute`` cases (``{"method": ..., "n": ..., ...}``) time predicting a graph and attending
  over it: prediction, layout (:func:`~sparsebench.bench.kernels.prepare`), kernel and end to
  end, and the dense baselines of :data:`DENSE`. Every timed part gets warm-up calls, then
  repeats, and reports the median and the spread (interquartile range); CUDA timings are
  synchronised. Compilation (FlexAttention) is timed on the first call and reported apart,
  never inside steady-state figures. Peak memory: on CPU a second process resets the kernel's
  peak-RSS counter (``/proc/self/clear_refs``) just before one warm end-to-end call and reads
  ``VmHWM`` after it; on CUDA the timing process reads ``torch.cuda.max_memory_allocated``
  around that call. Inputs: at n <= 512 with 4 heads of 64 the queries, keys and values of the
  bundled ``shakespeare-mlm`` model on held-out text; otherwise the seeded generator of
  :func:`sparsebench.datasets.synthetic` (local and content structure, a first-token sink).
* ``gold`` cases (:func:`gold_case`) time the gold graph against dense ``entmax15`` on seeded
  random q/k, and take the extra resident memory of every call (the same peak-RSS probe, reset
  after the inputs are built).

Cases are checked by :func:`~sparsebench.bench.speed_cases.validate_case` before anything runs.
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
from torch import Tensor

from .speed_cases import DENSE, GOLD_IMPLS, gold_case, validate_case

__all__ = [
    "DENSE",
    "GOLD_IMPLS",
    "dense_entmax15",
    "gold_case",
    "measure_case",
    "run_case",
    "stopwatch",
    "validate_case",
]


def dense_entmax15(
    q: Tensor, k: Tensor, v: Tensor | None = None, *, top: int | None = None, per_head=False
) -> Tensor:
    """``entmax.entmax15`` over the full score matrix ``q·k/√d``: the dense baseline.

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values; when given, the attention output ``probs @ v`` is returned.
        top: the package's ``k`` (size of its first partial sort); ``None`` sorts whole rows.
        per_head: one head after another (the scores of one head at a time in memory).

    Returns:
        The probabilities ``(B, H, N, M)``, or the output ``(B, H, N, Dv)`` with ``v``.
    """
    from entmax import entmax15

    from sparsebench.methods import attention_logits

    def one(qh: Tensor, kh: Tensor, vh: Tensor | None) -> Tensor:
        p = entmax15(attention_logits(qh, kh), dim=-1, k=top)
        return p if vh is None else p @ vh

    if not per_head:
        return one(q, k, v)
    heads = range(q.shape[1])
    return torch.cat(
        [
            one(q[:, h : h + 1], k[:, h : h + 1], None if v is None else v[:, h : h + 1])
            for h in heads
        ],
        dim=1,
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stopwatch(
    fn: Callable[[], Any], *, device: str = "cpu", warmup: int = 1, repeats: int = 5
) -> dict[str, float]:
    """Median, minimum and interquartile range of ``repeats`` timed calls after ``warmup``.

    Raises:
        ValueError: for ``repeats < 1`` or ``warmup < 0``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"stopwatch needs repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
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


# -- memory probe ---------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_begin(device: str) -> float:
    """Reset the peak counter; the memory in use now (MB), NaN where the peak cannot reset."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return float("nan")
    return _status_mb("VmRSS")


def _peak_end(device: str, base: float) -> float:
    """Peak memory since :func:`_peak_begin` above its ``base`` (MB)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20 - base
    return _status_mb("VmHWM") - base


def _peak(fn: Callable[[], Any], device: str) -> float:
    """Peak extra memory (MB) of one call of ``fn``."""
    base = _peak_begin(device)
    fn()
    _sync(device)
    return _peak_end(device, base)


# -- the execute suite ----------------------------------------------------------------------
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


def _dense_call(name: str, q, k, v, device: str) -> Callable[[], Tensor]:
    """The call of the dense baseline ``name`` (see :data:`DENSE`)."""
    from sparsebench.bench.kernels import execute
    from sparsebench.methods import Band, Graph

    if name == "sdpa":
        return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)
    if name == "dense_entmax":
        _, heads, n, _ = q.shape
        full = Graph((1, heads, n, n), [Band(-n, n)])
        return lambda: execute(q, k, v, full, path="dense")
    if name == "entmax15_full":
        return lambda: dense_entmax15(q, k, v, per_head=True)
    if not device.startswith("cuda"):
        raise NotImplementedError("xformers attention kernels run on CUDA only")
    import xformers.ops as xops

    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    return lambda: xops.memory_efficient_attention(qt, kt, vt)


def _run_dense(case: dict[str, Any], rec: dict[str, Any], q, k, v) -> dict[str, Any]:
    device = case.get("device", "cpu")
    fn = _dense_call(case["method"], q, k, v, device)
    with torch.no_grad():
        if case.get("measure") == "memory":
            fn()  # warm: lazy initialisation is not the call's memory
            rec["peak_mb"] = _peak(fn, device)
            return rec
        reps, warm = case.get("repeats", 5), case.get("warmup", 1)
        rec["kernel"] = stopwatch(fn, device=device, warmup=warm, repeats=reps)
        if device.startswith("cuda"):
            rec["peak_mb"] = _peak(fn, device)
    rec["end_to_end"] = rec["kernel"]
    return rec


def _run_method(case: dict[str, Any], rec: dict[str, Any], q, k, v) -> dict[str, Any]:
    """Prediction, layout, kernel and end-to-end figures of one method's case.

    The parts are timed in one function, in the order the record lists them, so the record's
    fields keep that order.
    """
    from sparsebench import methods
    from sparsebench.bench.kernels import execute, prepare

    device = case.get("device", "cpu")
    n, heads, dim = case["n"], case.get("heads", 8), case.get("dim", 64)
    normalizer, alpha = case.get("normalizer", "entmax"), case.get("alpha", 1.5)
    repeats, warmup = case.get("repeats", 5), case.get("warmup", 1)
    m = methods.create(case["method"], **case.get("params", {}))
    if m.learns:
        from sparsebench.datasets import synthetic

        train = synthetic(num_seqs=8, layers=1, heads=heads, n=min(n, 512), d=dim, seed=1)
        t0 = time.perf_counter()
        m = m.fit(train.split("train"), 0)
        rec["fit_s"] = time.perf_counter() - t0
    path = case.get("path", "auto")
    bs = case.get("block_size", 128)

    def end_to_end():
        plan = prepare(m.predict(q, k), path=path, block_size=bs)
        return execute(q, k, v, plan, normalizer=normalizer, alpha=alpha)

    with torch.no_grad():
        graph = m.predict(q, k)
        plan = prepare(graph, path=path, block_size=bs)
        rec["path"] = plan.path  # the path that runs
        if case.get("measure") == "memory":
            end_to_end()  # warm (compiles FlexAttention)
            rec["peak_mb"] = _peak(end_to_end, device)
            return rec
        rec["predict"] = stopwatch(
            lambda: m.predict(q, k), device=device, warmup=0, repeats=repeats
        )
        rec["sparsity"] = 1 - float(graph.num_edges().sum()) / (heads * n * n)
        if plan.layout is not None:
            rec["layout"] = stopwatch(
                lambda: prepare(graph, path=plan.path, block_size=bs),
                device=device,
                warmup=0,
                repeats=max(1, repeats // 2),
            )
            rec["block_density"] = plan.layout.density
        t0 = time.perf_counter()
        execute(q, k, v, plan, normalizer=normalizer, alpha=alpha)
        _sync(device)
        first = time.perf_counter() - t0
        rec["kernel"] = stopwatch(
            lambda: execute(q, k, v, plan, normalizer=normalizer, alpha=alpha),
            device=device,
            warmup=warmup,
            repeats=repeats,
        )
        if path == "flex":
            rec["compile_s"] = max(0.0, first - rec["kernel"]["median_s"])

        rec["end_to_end"] = stopwatch(end_to_end, device=device, warmup=0, repeats=repeats)
        if device.startswith("cuda"):
            rec["peak_mb"] = _peak(end_to_end, device)
    return rec


# -- the gold suite -------------------------------------------------------------------------
def _run_gold(case: dict[str, Any]) -> dict[str, Any]:
    from sparsebench.methods import gold_graph

    impl, n, heads, dim, repeats = (case[f] for f in ("impl", "n", "heads", "dim", "repeats"))
    g = torch.Generator().manual_seed(case.get("seed", 0))
    q = torch.randn(1, heads, n, dim, generator=g)
    k = torch.randn(1, heads, n, dim, generator=g)

    def call():
        with torch.no_grad():
            if impl == "gold":
                return gold_graph(q, k)
            return dense_entmax15(q, k, top=64 if impl == "entmax15_k64" else None) > 0

    times, peaks = [], []
    for _ in range(repeats):
        base = _peak_begin("cpu")
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
        peaks.append(_peak_end("cpu", base))
        del out
    return {
        "impl": impl,
        "n": n,
        "heads": heads,
        "dim": dim,
        "repeats": repeats,
        "time_min_s": min(times),
        "time_median_s": statistics.median(times),
        "peak_extra_mb": max(peaks),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


# -- the runner -----------------------------------------------------------------------------
def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Measure one case in this process (use :func:`measure_case` for memory figures).

    Raises:
        ValueError: for a case with bad arguments (:func:`validate_case`), before any work.
    """
    validate_case(case)
    if case.get("suite") == "gold":
        return _run_gold(case)
    device = case.get("device", "cpu")
    n, heads, dim = case["n"], case.get("heads", 8), case.get("dim", 64)
    q, k, v, source = _inputs(n, heads, dim, device, case.get("seed", 0))
    rec: dict[str, Any] = {**case, "source": source, "threads": torch.get_num_threads()}
    if case["method"] in DENSE:
        return _run_dense(case, rec, q, k, v)
    return _run_method(case, rec, q, k, v)


def _error(case: dict[str, Any], message: str) -> dict[str, Any]:
    """The record of a case that failed."""
    if case.get("suite") == "gold":
        return {**{f: case[f] for f in ("impl", "n", "heads", "dim")}, "error": message}
    return {**case, "error": message}


_WORKER = "import sys; from sparsebench.bench.speed import main; main(sys.argv[1:])"


def _in_fresh_process(case: dict[str, Any], timeout: float, env: dict) -> dict[str, Any]:
    cmd = [sys.executable, "-c", _WORKER, json.dumps(case)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return _error(case, f"timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        return _error(case, lines[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_case(case: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Time a case in a fresh process, and on CPU take its peak memory in a second one.

    The memory process sets glibc's mmap threshold to 64 KiB, so every sizeable buffer is
    mapped when allocated and returned when freed: the peak-RSS delta of the measured call then
    counts its whole working set, not only what the allocator could not reuse from the warm-up.
    (Timing runs without it: page faults on every allocation would slow the kernels.) A
    ``gold`` case takes its memory in its one process. Errors while measuring come back as
    ``{"error": ...}``.

    Raises:
        ValueError: for a case with bad arguments (:func:`validate_case`), before any process
            starts.
    """
    validate_case(case)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if case.get("suite") == "gold":
        return _in_fresh_process(case, timeout, env)
    rec = _in_fresh_process(case, timeout, env)
    if "error" in rec or case.get("device", "cpu").startswith("cuda"):
        return rec
    mem_env = {**env, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    mem = _in_fresh_process({**case, "measure": "memory"}, timeout, mem_env)
    if "error" in mem:
        return {**rec, "error": f"memory: {mem['error']}"}
    return {**rec, "peak_mb": mem["peak_mb"]}


def main(argv: list[str]) -> None:
    """Worker entry of the fresh process: measure the case ``argv[0]`` (JSON), print its record."""
    sys.stdout.write(json.dumps(run_case(json.loads(argv[0]))) + "\n")
