"""asv: GPU attention kernels, dense and over a predicted graph (n/a without CUDA).

Causal, bfloat16, 16 heads of 64, as the prepared GPU benchmark (:mod:`.gpu_bench`): the dense
baselines of the speed harness and the window graph (``N/32 + 1`` wide, two global tokens) on
the flex paths, softmax and α-entmax. ``setup`` raises ``NotImplementedError`` without CUDA
or without a baseline's package, which asv reports as n/a.
"""

from __future__ import annotations

import importlib.util

import torch

from .common import inputs

KERNELS = [
    "sdpa_flash",
    "sdpa_efficient",
    "xformers",
    "adasplash",
    "adasplash_block_mask",
    "flex_window",
    "flex_entmax_window",
]
_PACKAGE = {"xformers": "xformers", "adasplash": "adasplash", "adasplash_block_mask": "adasplash"}


class GpuKernels:
    """One forward call of each kernel (inputs and the graph's plan built in setup)."""

    params = (KERNELS, [4096, 16384, 32768])
    param_names = ["kernel", "n"]
    timeout = 600
    version = "1"

    def setup(self, kernel, n):
        if not torch.cuda.is_available():
            raise NotImplementedError("needs a CUDA device")
        package = _PACKAGE.get(kernel)
        if package and importlib.util.find_spec(package) is None:
            raise NotImplementedError(f"needs the {package} package (the gpu extra)")
        q, k, v = (x.to("cuda", torch.bfloat16) for x in inputs(n, heads=16))
        case = {"causal": True, "alpha": 1.5}
        if kernel.endswith("_window"):
            from sparsebench.bench import execute, prepare
            from sparsebench.methods import create

            graph = create("window", w=n // 32 + 1, global_tokens=2).predict(q, k, causal=True)
            path, normalizer = (
                ("flex", "softmax") if kernel == "flex_window" else ("flex_entmax", "entmax")
            )
            plan = prepare(graph, path=path, block_size=128)
            self.call = lambda: execute(q, k, v, plan, normalizer=normalizer)
        else:
            from sparsebench.bench.speed_baselines import dense_call

            self.call = dense_call(kernel, q, k, v, case)
        with torch.no_grad():
            self.call()  # compile, autotune and allocate before timing
        torch.cuda.synchronize()

    def time_forward(self, kernel, n):
        with torch.no_grad():
            self.call()
        torch.cuda.synchronize()

    def track_peak_cuda_mb(self, kernel, n):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad():
            self.call()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    track_peak_cuda_mb.unit = "MB"
