"""Every execution path equals the dense masked reference on the same graph."""

from __future__ import annotations

import pytest
import torch

from sparsebench import methods
from sparsebench.bench.execute import block_plan, execute
from sparsebench.methods import Band, Globals, Graph, Groups


def data(B=2, H=2, N=70, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, N, D, generator=g) * 2 for _ in range(3))


def graphs(B, H, N, lengths, causal):
    g = torch.Generator().manual_seed(1)
    rnd = torch.rand(B, H, N, N, generator=g) < 0.15
    yield "random", Graph.from_dense(rnd, lengths=lengths, causal=causal)
    pos = torch.tensor([[0, 5], [0, -1]])
    yield (
        "band+globals",
        Graph((B, H, N, N), [Band(-3, 3), Globals(pos)], lengths=lengths, causal=causal),
    )
    qg = torch.randint(0, 6, (B, H, N, 1), generator=g)
    kg = torch.randint(0, 6, (B, H, N, 1), generator=g)
    yield "groups", Graph((B, H, N, N), [Groups(qg, kg)], lengths=lengths, causal=causal)
    yield "empty rows", Graph((B, H, N, N), [Band(5, 9)], lengths=lengths, causal=False)


CASES = [(None, False), (torch.tensor([70, 41]), False), (torch.tensor([70, 33]), True)]


@pytest.mark.parametrize("normalizer", ["entmax", "softmax"])
@pytest.mark.parametrize(("lengths", "causal"), CASES, ids=["full", "padded", "padded-causal"])
def test_paths_match_dense(normalizer, lengths, causal):
    q, k, v = data()
    for name, graph in graphs(2, 2, 70, lengths, causal):
        ref = execute(q, k, v, graph, normalizer=normalizer, path="dense")
        for path, bs in (("block", 16), ("block", 64)):
            out = execute(q, k, v, graph, normalizer=normalizer, path=path, block_size=bs)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=f"{name} {path} {bs}")
        if name == "groups":
            out = execute(q, k, v, graph, normalizer=normalizer, path="grouped")
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("normalizer", ["entmax", "softmax"])
def test_block_layout_built_over_many_slabs(normalizer, monkeypatch):
    """Laid out 16 query rows at a time, every partial block keeps its own head's mask."""
    import sparsebench.methods.graph as graph_module

    monkeypatch.setattr(graph_module, "_SLAB_ELEMENTS", 2 * 2 * 70 * 16)
    q, k, v = data()
    for lengths, causal in CASES:
        for name, graph in graphs(2, 2, 70, lengths, causal):
            ref = execute(q, k, v, graph, normalizer=normalizer, path="dense")
            out = execute(q, k, v, graph, normalizer=normalizer, path="block", block_size=16)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=name)


def test_dense_path_matches_plain_attention():
    from entmax import entmax15

    from sparsebench.methods import attention_logits

    q, k, v = data(N=20)
    full = Graph((2, 2, 20, 20), [Band(-20, 20)])
    ref = entmax15(attention_logits(q, k), dim=-1) @ v
    torch.testing.assert_close(execute(q, k, v, full, path="dense"), ref, rtol=1e-5, atol=1e-6)
    sm = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    out = execute(q, k, v, full, normalizer="softmax", path="block", block_size=16)
    torch.testing.assert_close(out, sm, rtol=1e-5, atol=1e-6)


def test_empty_rows_are_zero_not_full_attention():
    q, k, v = data(N=10)
    empty = Graph.empty((2, 2, 10, 10))
    for path in ("dense", "block"):
        assert execute(q, k, v, empty, path=path, block_size=4).abs().sum() == 0


def test_block_plan_full_and_partial():
    graph = Graph((1, 1, 8, 8), [Band(-1, 1)])
    plan = block_plan(graph, 4)
    assert plan.kept[0, 0].tolist() == [[True, True], [True, True]]
    assert not plan.full.any()  # every kept block misses some pair of the band
    full = block_plan(Graph((1, 1, 8, 8), [Band(-8, 8)]), 4)
    assert full.full.all() and full.partial_masks.shape[0] == 0
    assert plan.partial_masks.shape == (4, 4, 4)


def test_flex_softmax_matches_dense_eager():
    pytest.importorskip("torch.nn.attention.flex_attention")
    from sparsebench.bench.execute import _flex

    q, k, v = data(N=256, D=16)
    lengths = torch.tensor([256, 200])
    for _, graph in graphs(2, 2, 256, lengths, False):
        ref = execute(q, k, v, graph, normalizer="softmax", path="dense")
        out = _flex(q, k, v, graph, 128, compiled=False)
        valid = (torch.arange(256) < lengths.view(-1, 1)).view(2, 1, 256, 1)
        torch.testing.assert_close(out * valid, ref * valid, rtol=1e-5, atol=1e-5)


def test_method_graphs_run_on_their_paths():
    q, k, v = data(N=64)
    m = methods.create("window", w=5)
    graph = m.predict(q, k, lengths=torch.tensor([64, 50]))
    ref = execute(q, k, v, graph, path="dense")
    torch.testing.assert_close(execute(q, k, v, graph, block_size=16), ref, rtol=1e-5, atol=1e-6)
