"""Every registered method predicts and executes on CUDA as it does on the CPU.

Marked ``cuda``: skipped on machines without a GPU (CI), run by the GPU session's script.
"""

from __future__ import annotations

import pytest
import torch

from sparsebench import methods
from sparsebench.bench import dense_attention
from sparsebench.bench.kernels import execute, prepare
from sparsebench.datasets import synthetic

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

B, H, N, D = 1, 2, 256, 32


@pytest.mark.parametrize("name", methods.names())
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_method_on_cuda_runs_its_graph_exactly(name, causal):
    """Predict on CUDA, count edges (on the CPU), execute on the chosen path: equal to the
    dense masked reference of the same graph, in float32."""
    m = methods.create(name)
    if m.learns:
        m = m.fit(synthetic(num_seqs=4, layers=1, heads=H, n=N, d=D, seed=1).split("train"), 0)
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, H, N, D, generator=g).cuda() for _ in range(3))
    graph = m.predict(q, k, causal=causal)
    edges = graph.num_edges()
    assert edges.device.type == "cpu" and edges.shape == (B, H)
    for normalizer in ("softmax", "entmax"):
        out = execute(q, k, v, prepare(graph, block_size=64), normalizer=normalizer)
        ref = dense_attention(q, k, v, graph, normalizer=normalizer)
        assert out.is_cuda and out.shape == (B, H, N, D)
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max().clamp(min=1e-6)
