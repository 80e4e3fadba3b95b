"""Wall-clock and peak memory, each case in a fresh process: the one speed harness.

Two suites share the runner (:func:`measure_case`):

* ``execute`` cases (``{"method": ..., "n": ..., ...}``) time predicting a graph and attending
  over it: prediction, layout (:func:`~sparsebench.bench.kernels.prepare`), kernel and end to
  end, and the dense baselines of :data:`DENSE` (:mod:`.speed_baselines`). Every timed part
  gets warm-up calls, then repeats, and reports the median and the spread (interquartile
  range); on CUDA each repeat is timed by a pair of CUDA events around the call (host work
  inside the call, such as layouts and host synchronisation, counts, because the end event is
  recorded after the call returns). Compilation (FlexAttention) is timed on the first call and
  reported apart, never inside steady-state figures. Peak memory: on CPU a second process
  resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) just before one warm
  end-to-end call and reads ``VmHWM`` after it; on CUDA the timing process reads
  ``torch.cuda.max_memory_allocated`` around that call, above what was allocated before it.
  Inputs: at n <= 512 with 4 heads of 64 the queries, keys and values of the bundled
  ``shakespeare-mlm`` model on held-out text; otherwise the seeded generator of
  :func:`sparsebench.datasets.synthetic` (local and content structure, a first-token sink);
  then cast to the case's ``dtype``. A method with a fit step is fitted before anything is
  timed, on the case's ``fit_data`` (a dataset's train split, layer 0) or else on seeded
  synthetic sequences, and the record says which in ``fit_on``
  (:func:`~sparsebench.bench.speed_cases.fitted_method`).
* ``gold`` cases (:func:`gold_case`) time the gold graph against dense ``entmax15`` on seeded
  random q/k, and take the extra resident memory of every call (the same peak-RSS probe, reset
  after the inputs are built).

Cases are checked by :func:`~sparsebench.bench.speed_cases.validate_case` before anything runs.
Many cases can share one worker process (:mod:`.speed_group`, used by the GPU preset).
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

from .speed_baselines import dense_call, dense_entmax15
from .speed_cases import (
    DENSE,
    GOLD_IMPLS,
    baseline_normalizer,
    fitted_method,
    gold_case,
    validate_case,
)

__all__ = [
    "DENSE",
    "GOLD_IMPLS",
    "dense_entmax15",
    "gold_case",
    "measure_case",
    "peak_extra_mb",
    "run_case",
    "stopwatch",
    "validate_case",
]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stopwatch(
    fn: Callable[[], Any], *, device: str = "cpu", warmup: int = 1, repeats: int = 5
) -> dict[str, float]:
    """Median, minimum and interquartile range of ``repeats`` timed calls after ``warmup``.

    On CUDA each call is timed by CUDA events recorded before and after it; elsewhere by
    ``time.perf_counter``.

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
        if device.startswith("cuda"):
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
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
    # The kernel's RSS counters are synced in batches, so a call that allocates nothing can
    # read a few KB below its base: below the measure's resolution, i.e. 0.
    extra = _status_mb("VmHWM") - base
    return extra if extra != extra else max(0.0, extra)  # NaN stays NaN


def peak_extra_mb(fn: Callable[[], Any], device: str) -> float:
    """Peak extra memory (MB) of one call of ``fn``."""
    base = _peak_begin(device)
    fn()
    _sync(device)
    return _peak_end(device, base)


# -- the execute suite ----------------------------------------------------------------------
def _inputs(case: dict[str, Any]):
    """Queries, keys and values of a case on its device and in its dtype, and their source."""
    n, heads, dim = case["n"], case.get("heads", 8), case.get("dim", 64)
    device, dtype = case.get("device", "cpu"), getattr(torch, case.get("dtype", "float32"))
    found = None
    if n <= 512 and heads == 4 and dim == 64:
        try:
            from sparsebench.datasets.shakespeare import load_model, load_tokenizer
            from sparsebench.datasets.train import token_streams

            model = load_model("shakespeare-mlm")
            ids = token_streams(load_tokenizer())["eval"][0][:n].view(1, n)
            cap: list = []
            with torch.no_grad():
                model(ids, capture=cap)
            found = (*cap[len(cap) // 2], "shakespeare-mlm")
        except Exception:  # no bundled weights or text: fall back to the generator
            found = None
    if found is None:
        from sparsebench.datasets import synthetic

        d = synthetic(
            num_seqs=1, layers=1, heads=heads, n=n, d=dim, min_length=n, seed=case.get("seed", 0)
        )
        lay = d.layer(0)
        found = (lay.q, lay.k, lay.v, "generator")
    q, k, v, source = found
    return (*(x.to(device=device, dtype=dtype) for x in (q, k, v)), source)


def _run_dense(case: dict[str, Any], rec: dict[str, Any], q, k, v) -> dict[str, Any]:
    device = case.get("device", "cpu")
    rec["normalizer"] = baseline_normalizer(case["method"])
    fn = dense_call(case["method"], q, k, v, case)
    with torch.no_grad():
        if case.get("measure") == "memory":
            fn()  # warm: lazy initialisation is not the call's memory
            rec["peak_mb"] = peak_extra_mb(fn, device)
            return rec
        reps, warm = case.get("repeats", 5), case.get("warmup", 1)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        rec["first_call_s"] = time.perf_counter() - t0  # Triton/JIT compilation included
        rec["kernel"] = stopwatch(fn, device=device, warmup=warm, repeats=reps)
        if device.startswith("cuda"):
            rec["peak_mb"] = peak_extra_mb(fn, device)
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
    n, heads = case["n"], case.get("heads", 8)
    normalizer, alpha = case.get("normalizer", "entmax"), case.get("alpha", 1.5)
    repeats, warmup = case.get("repeats", 5), case.get("warmup", 1)
    causal = bool(case.get("causal", False))
    m = methods.create(case["method"], **case.get("params", {}))
    if m.learns:  # fitted once per process, or per fit_cache folder
        m, rec["fit_s"], rec["fit_on"] = fitted_method(case)
    path = case.get("path", "auto")
    bs = case.get("block_size", 128)

    def predict():
        return m.predict(q, k, causal=causal)

    def run(plan):
        return execute(q, k, v, plan, normalizer=normalizer, alpha=alpha)

    def end_to_end():
        return run(prepare(predict(), path=path, block_size=bs))

    with torch.no_grad():
        graph = predict()
        plan = prepare(graph, path=path, block_size=bs)
        rec["path"] = plan.path  # the path that runs
        if case.get("measure") == "memory":
            end_to_end()  # warm (compiles FlexAttention)
            rec["peak_mb"] = peak_extra_mb(end_to_end, device)
            return rec
        rec["predict"] = stopwatch(predict, device=device, warmup=0, repeats=repeats)
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
        run(plan)
        _sync(device)
        first = time.perf_counter() - t0
        rec["kernel"] = stopwatch(lambda: run(plan), device=device, warmup=warmup, repeats=repeats)
        if plan.path in ("flex", "flex_entmax"):
            rec["compile_s"] = max(0.0, first - rec["kernel"]["median_s"])
        if plan.path == "flex_entmax":
            from sparsebench.bench.kernels.flex_entmax import flex_entmax_attention

            stats: dict[str, Any] = {}
            flex_entmax_attention(q, k, v, plan.layout, alpha, stats=stats)
            rec["threshold_passes"] = stats["threshold_passes"]
        rec["end_to_end"] = stopwatch(end_to_end, device=device, warmup=0, repeats=repeats)
        if device.startswith("cuda"):
            rec["peak_mb"] = peak_extra_mb(end_to_end, device)
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
def device_label(device: str) -> str:
    """``"cpu"``, or ``"cuda (<GPU name>)"`` for a CUDA device: the ``device`` of records."""
    if not device.startswith("cuda"):
        return "cpu"
    index = int(device.partition(":")[2] or 0)
    return f"cuda ({torch.cuda.get_device_name(index)})"


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Measure one case in this process (use :func:`measure_case` for memory figures).

    Raises:
        ValueError: for a case with bad arguments (:func:`validate_case`), before any work.
    """
    validate_case(case)
    if case.get("suite") == "gold":
        return _run_gold(case)
    q, k, v, source = _inputs(case)
    device = case.get("device", "cpu")
    rec: dict[str, Any] = {**case, "source": source, "threads": torch.get_num_threads()}
    rec["timer"] = "cuda events" if device.startswith("cuda") else "perf_counter"
    if case["method"] in DENSE:
        return _run_dense(case, rec, q, k, v)
    return _run_method(case, rec, q, k, v)


def error_record(case: dict[str, Any], message: str) -> dict[str, Any]:
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
        return error_record(case, f"timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        return error_record(case, lines[-1])
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
