"""asv: the gold α-entmax graph against dense ``entmax15`` (time and peak memory)."""

from __future__ import annotations

import torch


class GoldGraph:
    """Gold-graph support of random q/k with 8 heads, d = 64, against dense entmax15."""

    params = ([512, 1024, 2048], ["gold_graph", "entmax15"])
    param_names = ["n", "impl"]
    timeout = 600
    version = "1"

    def setup(self, n, impl):
        g = torch.Generator().manual_seed(0)
        self.q = torch.randn(1, 8, n, 64, generator=g)
        self.k = torch.randn(1, 8, n, 64, generator=g)

    def _call(self, impl):
        from sparsebench.bench import dense_entmax15, gold_graph

        with torch.no_grad():
            if impl == "gold_graph":
                return gold_graph(self.q, self.k)
            return dense_entmax15(self.q, self.k) > 0

    def time_support(self, n, impl):
        self._call(impl)

    def peakmem_support(self, n, impl):
        self._call(impl)
