"""Block layouts drawn from a graph's structure equal those read from its dense rows."""

from __future__ import annotations

import itertools

import pytest
import torch

from sparsebench import methods
from sparsebench.methods.layout import slab_layout, structural_layout


@pytest.mark.parametrize(
    ("n", "block", "kernel", "causal", "padded"),
    list(itertools.product([45, 64], [4, 8], [3, 16, 64], [False, True], [False, True])),
)
def test_block_layout_graphs_are_laid_out_from_their_structure(n, block, kernel, causal, padded):
    g = torch.Generator().manual_seed(n)
    q, k = (torch.randn(3, 2, n, 8, generator=g) for _ in range(2))
    lengths = torch.tensor([n, n // 2, 7]) if padded else None
    bigbird = methods.create("bigbird", block_size=block, num_random=2, window=3, global_tokens=1)
    graph = bigbird.predict(q, k, lengths=lengths, causal=causal)
    slab, drawn = slab_layout(graph, kernel), structural_layout(graph, kernel)
    assert drawn is not None
    for a, c in zip(slab[:2], drawn[:2], strict=True):  # kept and full blocks
        assert torch.equal(a.expand_as(c), c.expand_as(a))
    for idx in (slab[2] >= 0).nonzero().tolist():  # every partial block's own mask
        d = tuple(x if size > 1 else 0 for x, size in zip(idx, drawn[2].shape, strict=True))
        assert torch.equal(slab[3][slab[2][tuple(idx)]], drawn[3][drawn[2][d]])
