"""Every execution path equals the dense masked reference on the same graph."""

from __future__ import annotations

import pytest
import torch

from sparsebench import methods
from sparsebench.bench import Plan, block_plan, execute, prepare
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
    # The two diagonal blocks have the same edges and share one mask: three masks in all.
    assert plan.partial_masks.shape == (3, 4, 4)
    pid = plan.partial_id[0, 0]
    assert pid[0, 0] == pid[1, 1] and len({int(pid[0, 0]), int(pid[0, 1]), int(pid[1, 0])}) == 3
    for qb in range(2):
        for kb in range(2):
            want = (torch.arange(4).view(-1, 1) + 4 * qb - torch.arange(4) - 4 * kb).abs() <= 1
            assert torch.equal(plan.partial_masks[pid[qb, kb]], want)


def test_flex_softmax_matches_dense_eager():
    pytest.importorskip("torch.nn.attention.flex_attention")
    from sparsebench.bench.kernels.flex import flex_attention

    q, k, v = data(N=256, D=16)
    lengths = torch.tensor([256, 200])
    for _, graph in graphs(2, 2, 256, lengths, False):
        ref = execute(q, k, v, graph, normalizer="softmax", path="dense")
        out = flex_attention(q, k, v, block_plan(graph, 128), compiled=False)
        valid = (torch.arange(256) < lengths.view(-1, 1)).view(2, 1, 256, 1)
        torch.testing.assert_close(out * valid, ref * valid, rtol=1e-5, atol=1e-5)


def test_method_graphs_run_on_their_paths():
    q, k, v = data(N=64)
    m = methods.create("window", w=5)
    graph = m.predict(q, k, lengths=torch.tensor([64, 50]))
    ref = execute(q, k, v, graph, path="dense")
    torch.testing.assert_close(execute(q, k, v, graph, block_size=16), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("b", [4, 6, 16, 64])
def test_structural_layout_equals_slab_layout(b):
    """Bands and global tokens are laid out from their structure; the result is the slab one."""
    from sparsebench.bench.kernels.plan import slab_layout, structural_layout

    N = 70
    pos = torch.tensor([[0, 33, -1], [69, -1, -1]])
    for lengths, causal in CASES:
        for parts in ([Band(-3, 5)], [Globals(pos)], [Band(-9, 0), Globals(pos)], [Band(2, 4)]):
            graph = Graph((2, 3, N, N), parts, lengths=lengths, causal=causal)
            got, want = structural_layout(graph, b), slab_layout(graph, b)
            assert got is not None
            for a, w in zip(got[:3], want[:3], strict=True):
                assert torch.equal(torch.broadcast_to(a, w.shape), w), (parts, lengths, causal)
            assert torch.equal(got[3], want[3])
    random = Graph.from_dense(torch.rand(1, 1, N, N) < 0.1)
    assert structural_layout(random, b) is None  # no structure: laid out by slabs


@pytest.mark.parametrize("normalizer", ["entmax", "softmax"])
def test_block_path_in_many_small_chunks(normalizer):
    """Chunks smaller than one wide row (global tokens) still give the dense result."""
    from sparsebench.bench.kernels.block import block_attention

    q, k, v = data(N=200)
    pos = torch.tensor([[0, 150], [7, -1]])
    graph = Graph((2, 2, 200, 200), [Band(-20, 20), Globals(pos)], lengths=torch.tensor([200, 90]))
    ref = execute(q, k, v, graph, normalizer=normalizer, path="dense")
    out = block_attention(q, k, v, block_plan(graph, 16), normalizer, 1.5, max_entries=16 * 16 * 3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.5, 1.25, 2.0])
def test_entmax_paths_at_other_alphas(alpha):
    q, k, v = data()
    for name, graph in graphs(2, 2, 70, torch.tensor([70, 41]), False):
        ref = execute(q, k, v, graph, alpha=alpha, path="dense")
        paths = ["block", "grouped"] if name == "groups" else ["block"]
        for path in paths:
            out = execute(q, k, v, graph, alpha=alpha, path=path, block_size=16)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=f"{name} {path}")


def test_entmax15_in_place_matches_package_on_wide_supports():
    """Rows whose support fills the first prefix are redone wider; -inf entries are no keys."""
    from entmax import entmax15

    from sparsebench.bench.kernels.normalize import entmax15_inplace

    g = torch.Generator().manual_seed(3)
    z = torch.randn(40, 300, generator=g) * torch.tensor([0.01, 0.3, 3.0]).repeat(14)[:40, None]
    z[::5, 100:] = float("-inf")
    x = (z - z.amax(-1, keepdim=True)) / 2
    got = entmax15_inplace(x.clone(), k=8)
    torch.testing.assert_close(got, entmax15(z, dim=-1), rtol=1e-5, atol=1e-7)
    assert (entmax15(z, dim=-1) > 0).sum(-1).max() > 64  # the wide case is exercised


def test_packed_groups_for_xformers_match_dense():
    """The packing handed to xformers (BlockDiagonalMask over sorted groups) is exact.

    xformers' kernel runs on CUDA only; its mask class runs anywhere, so the packed groups are
    attended here through the materialised mask.
    """
    pytest.importorskip("xformers")
    import logging

    logging.getLogger("xformers").setLevel(logging.ERROR)
    from xformers.ops.fmha.attn_bias import BlockDiagonalMask

    from sparsebench.bench.kernels.grouped import grouped_attention

    seen = []

    def attend(qc, kc, vc, q_seqlen, kv_seqlen, scale):
        seen.append((q_seqlen, kv_seqlen))
        bias = BlockDiagonalMask.from_seqlens(q_seqlen, kv_seqlen).materialize((len(qc), len(kc)))
        return torch.softmax(qc @ kc.T * scale + bias, -1) @ vc

    q, k, v = data()
    g = torch.Generator().manual_seed(5)
    qg = torch.randint(-1, 7, (2, 2, 70, 1), generator=g)  # -1: in no group
    kg = torch.randint(0, 6, (2, 2, 70, 1), generator=g)  # group 6 has queries, no keys
    graph = Graph((2, 2, 70, 70), [Groups(qg, kg)], lengths=torch.tensor([70, 41]))
    ref = execute(q, k, v, graph, normalizer="softmax", path="dense")
    out = grouped_attention(q, k, v, graph, "softmax", 1.5, attend=attend)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert len(seen) == 1 and len(seen[0][0]) > 4


@pytest.mark.parametrize("normalizer", ["entmax", "softmax"])
@pytest.mark.parametrize("causal", [False, True])
def test_global_rows_split_off_and_columns_kept_by_unit(normalizer, causal):
    """A global token's row is attended on its own; its column costs a unit of keys, not a block.

    Both give the dense result, with padding and causality.
    """
    from sparsebench.bench.kernels.block import split_heavy

    N = 400
    q, k, v = data(N=N)
    pos = torch.tensor([[0, 150], [7, -1]])
    lengths = torch.tensor([400, 170])
    graph = Graph((2, 2, N, N), [Band(-20, 20), Globals(pos)], lengths=lengths, causal=causal)
    plan = block_plan(graph, 16)
    light, heavy = split_heavy(plan, plan.partial_masks.any(-1))
    if not causal:
        # Sequence 0's global rows need all 25 key blocks, their neighbours 4: split off. In
        # sequence 1 (11 blocks) a global row is too close to the others to be worth it.
        got = {(int(bh), int(r) % 400) for bh, r in zip(heavy.seq_head, heavy.row, strict=True)}
        assert got == {(0, 0), (0, 150), (1, 0), (1, 150)}
        assert light.kept.sum() < plan.kept.sum()
        assert heavy.mask.sum(-1).tolist() == [400] * 4
    ref = execute(q, k, v, graph, normalizer=normalizer, path="dense")
    for b in (16, 64):
        out = execute(q, k, v, graph, normalizer=normalizer, path="block", block_size=b)
        # 400-key rows: fp32 sums in another order differ by a few 1e-6.
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=f"b={b}")
        assert float((out - ref).norm() / ref.norm()) <= 1e-5


def test_prepare_chooses_the_path_once():
    """``prepare`` picks grouped for one slot of groups, else block, and lays out what it needs."""
    q, k, v = data()
    found = dict(graphs(2, 2, 70, None, False))
    plan = prepare(found["groups"])
    assert isinstance(plan, Plan) and plan.path == "grouped" and plan.layout is None
    plan = prepare(found["band+globals"], block_size=16)
    assert plan.path == "block" and plan.layout.block_size == 16 and plan.block_size == 16
    assert prepare(found["random"], path="dense").layout is None
    assert prepare(found["random"]).block_size == 128  # the default kernel block size
    ref = execute(q, k, v, found["band+globals"], path="dense")
    torch.testing.assert_close(execute(q, k, v, plan), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="contradicts"):
        execute(q, k, v, plan, path="dense")
    with pytest.raises(ValueError, match="contradicts"):
        execute(q, k, v, plan, block_size=64)
    with pytest.raises(NotImplementedError, match="Groups slot"):
        prepare(found["random"], path="grouped")
    with pytest.raises(ValueError, match="unknown path"):
        prepare(found["random"], path="sparse")
    with pytest.raises(NotImplementedError, match="softmax only"):
        execute(q, k, v, found["random"], path="flex")


def test_execute_is_the_function_the_readme_documents():
    import sparsebench.bench as bench

    assert callable(bench.execute) and bench.execute is execute
