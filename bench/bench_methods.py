"""asv: predicting graphs and attending over them, per method and length; graph quality."""

from __future__ import annotations

import torch

from .common import SUITE_METHODS, fitted, inputs


class Predict:
    """Time to predict the graph of one layer (8 heads, d = 64)."""

    params = (SUITE_METHODS, [1024, 4096])
    param_names = ["method", "n"]
    timeout = 600
    version = "1"

    def setup(self, method, n):
        self.q, self.k, _ = inputs(n)
        self.m = fitted(method)

    def time_predict(self, method, n):
        with torch.no_grad():
            self.m.predict(self.q, self.k)


class Execute:
    """Sparse attention over a predicted graph (block-sparse or grouped path)."""

    params = (["sdpa", "dense_entmax", *SUITE_METHODS], [1024, 4096], ["entmax", "softmax"])
    param_names = ["method", "n", "normalizer"]
    timeout = 600
    version = "1"

    def setup(self, method, n, normalizer):
        from sparsebench.bench import prepare
        from sparsebench.methods import Band, Graph

        self.q, self.k, self.v = inputs(n)
        if method == "sdpa":
            if normalizer != "softmax":
                raise NotImplementedError("sdpa is softmax attention")
            self.plan = None
            return
        if method == "dense_entmax":
            if normalizer != "entmax":
                raise NotImplementedError("dense_entmax is entmax attention")
            self.plan = prepare(Graph((1, 8, n, n), [Band(-n, n)]), path="dense")
            return
        self.plan = prepare(fitted(method).predict(self.q, self.k), block_size=128)

    def _run(self, normalizer):
        from sparsebench.bench import execute

        with torch.no_grad():
            if self.plan is None:
                return torch.nn.functional.scaled_dot_product_attention(self.q, self.k, self.v)
            return execute(self.q, self.k, self.v, self.plan, normalizer=normalizer)

    def time_execute(self, method, n, normalizer):
        self._run(normalizer)

    def peakmem_execute(self, method, n, normalizer):
        self._run(normalizer)


class Quality:
    """Recall and sparsity of each default configuration on the default dataset (layer 1)."""

    params = (SUITE_METHODS,)
    param_names = ["method"]
    timeout = 1200
    version = "1"

    def setup_cache(self):
        from sparsebench import datasets
        from sparsebench.bench import evaluate
        from sparsebench.methods import from_spec

        data = datasets.load("shakespeare-lm", log=lambda m: None)
        cache = {}
        gold: dict = {}
        for spec in SUITE_METHODS:
            res = evaluate(data, from_spec(spec), layers=[1], gold_cache=gold)
            cache[spec] = res["metrics"]
        return cache

    def track_recall(self, cache, method):
        return cache[method]["recall"]

    track_recall.unit = "fraction"

    def track_sparsity(self, cache, method):
        return cache[method]["sparsity"]

    track_sparsity.unit = "fraction"


class CudaExecute:
    """GPU kernels: xformers memory-efficient attention and compiled FlexAttention."""

    params = (["xformers", "flex_window"], [4096, 16384, 65536])
    param_names = ["kernel", "n"]
    timeout = 600
    version = "1"

    def setup(self, kernel, n):
        if not torch.cuda.is_available():
            raise NotImplementedError("needs a CUDA device")
        g = torch.Generator(device="cuda").manual_seed(0)
        shape = (1, 8, n, 64)
        self.q, self.k, self.v = (
            torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in "qkv"
        )
        if kernel == "flex_window":
            from sparsebench.bench import prepare
            from sparsebench.methods import create

            graph = create("window", w=257, global_tokens=2).predict(self.q, self.k)
            self.plan = prepare(graph, path="flex", block_size=128)

    def time_kernel(self, kernel, n):
        if kernel == "xformers":
            import xformers.ops as xops

            xops.memory_efficient_attention(*(x.transpose(1, 2) for x in (self.q, self.k, self.v)))
        else:
            from sparsebench.bench import execute

            execute(self.q, self.k, self.v, self.plan, normalizer="softmax")
        torch.cuda.synchronize()
