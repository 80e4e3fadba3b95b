"""asv: peak memory of predicting a graph with the predictors that score every pair.

DSA, Sparsefinder's distance threshold, ``random`` and ``topk_oracle`` score a slab of query
rows at a time, so predicting holds its inputs, the output graph and a working set of fixed
size, never ``N x N`` float scores. Per method and length (one sequence, 8 heads, d = 64):

* ``peakmem_predict``: asv's peak resident memory of the process (imports and inputs included);
* ``track_predict_mb``: the peak of one warm ``predict`` call above the memory in use before
  it, by the speed harness's probe (Linux; NaN elsewhere);
* ``track_graph_mb``: the storage of the graph's tensors;
* ``track_working_set_x_sdpa`` (``PairwiseWorkingSet``): the predictor's peak less its graph,
  over the same probe's peak for dense softmax attention (``scaled_dot_product_attention``) at
  the same length, both measured in one process. The target is at most 4.

``sdpa`` is the reference row of ``PairwiseMemory``.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from .common import fitted, inputs
from .speed import peak_extra_mb

#: The predictors that score every (query, key) pair, and dense attention for reference.
METHODS = ["sdpa", "dsa", "dsa:select=threshold", "sparsefinder_distance", "random", "topk_oracle"]


def _return_freed_memory() -> None:
    """Map every buffer above 64 KiB on its own (glibc), so a freed buffer leaves the RSS.

    Otherwise memory freed by an earlier call is reused without showing in the peak: the speed
    harness sets the same through ``MALLOC_MMAP_THRESHOLD_`` for its memory process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 0)  # M_TRIM_THRESHOLD


def graph_mb(graph) -> float:
    """Storage of the tensors that hold a graph's parts (MB)."""
    tensors = [v for p in graph.parts for v in vars(p).values() if isinstance(v, Tensor)]
    return sum(t.untyped_storage().nbytes() for t in tensors) / 2**20


class _Predictor:
    """Set-up shared by the two suites: the fitted method (or SDPA) and warm libraries."""

    param_names = ["method", "n"]
    timeout = 1200
    version = "1"

    def setup(self, method, n):
        _return_freed_memory()
        self.method = None if method == "sdpa" else fitted(method)
        small = inputs(256)
        self._call(*small)  # warm: libraries allocate their buffers on a first call
        self.qkv = inputs(n)

    def _call(self, q, k, v):
        with torch.no_grad():
            if self.method is None:
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return self.method.predict(q, k)


class PairwiseMemory(_Predictor):
    """Memory of ``predict`` for the pairwise-scoring predictors, against dense attention."""

    params = (METHODS, [4096, 8192])

    def peakmem_predict(self, method, n):
        self._call(*self.qkv)

    def track_predict_mb(self, method, n):
        return peak_extra_mb(lambda: self._call(*self.qkv), "cpu")

    track_predict_mb.unit = "MB"

    def track_graph_mb(self, method, n):
        return 0.0 if self.method is None else graph_mb(self._call(*self.qkv))

    track_graph_mb.unit = "MB"


class PairwiseWorkingSet(_Predictor):
    """The memory target at N = 8192: a predictor's working set over SDPA's peak, at most 4.

    The slabs have a fixed budget while dense attention's memory grows with N, so the ratio
    is larger at shorter lengths (about 3.3 to 3.9 at N = 4096) and smaller at longer ones.
    """

    params = (METHODS[1:], [8192])

    def track_working_set_x_sdpa(self, method, n):
        q, k, v = self.qkv
        sdpa = peak_extra_mb(
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), "cpu"
        )
        graph: list = []
        peak = peak_extra_mb(lambda: graph.append(self._call(q, k, v)), "cpu")
        return (peak - graph_mb(graph[0])) / sdpa

    track_working_set_x_sdpa.unit = "ratio"
