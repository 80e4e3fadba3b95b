"""Wall-clock and peak memory of the gold graph against dense ``entmax15``.

Each case runs in a fresh Python process so that its peak memory is its own: the process
resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) after building its inputs and
reads ``VmHWM`` after the call, so the figure is the extra resident memory of the call alone.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["IMPLS", "measure", "run_case"]

IMPLS = ("gold", "entmax15", "entmax15_k64")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_case(impl: str, n: int, heads: int, dim: int, repeats: int, seed: int = 0) -> dict:
    """Time one implementation in this process (call through :func:`measure` for memory)."""
    import torch
    from entmax import entmax15

    from sparsebench.methods import attention_logits, gold_graph

    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, n, dim, generator=g)
    k = torch.randn(1, heads, n, dim, generator=g)

    def call():
        with torch.no_grad():
            if impl == "gold":
                return gold_graph(q, k)
            z = attention_logits(q, k)
            return entmax15(z, dim=-1, k=64 if impl == "entmax15_k64" else None) > 0

    times, peaks = [], []
    for _ in range(repeats):
        exact_peak = _reset_peak()
        rss0 = _status_kb("VmRSS")
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
        peaks.append((_status_kb("VmHWM") - rss0) / 1024 if exact_peak else float("nan"))
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


def measure(impl: str, n: int, heads: int, dim: int, repeats: int, timeout: float = 1800) -> dict:
    """Run :func:`run_case` in a fresh process and return its record."""
    if impl not in IMPLS:
        raise ValueError(f"unknown implementation {impl!r}; choose from {IMPLS}")
    cmd = [
        sys.executable,
        "-m",
        "sparsebench.bench.goldspeed",
        impl,
        str(n),
        str(heads),
        str(dim),
        str(repeats),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"impl": impl, "n": n, "heads": heads, "dim": dim, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    impl, n, heads, dim, repeats = sys.argv[1], *map(int, sys.argv[2:6])
    sys.stdout.write(json.dumps(run_case(impl, n, heads, dim, repeats)) + "\n")
