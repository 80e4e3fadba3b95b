"""Graph parts, validity, slabs and edge counts."""

from __future__ import annotations

import pytest
import torch

from sparsebench.bench import Graph
from sparsebench.methods import Band, BlockLayout, DenseMask, Globals, Groups, RowIndex

from .conftest import dense_valid


def brute_band(N, lo, hi):
    m = torch.zeros(N, N, dtype=torch.bool)
    for i in range(N):
        for j in range(N):
            m[i, j] = lo <= j - i <= hi
    return m


def test_from_dense_round_trip_applies_validity():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 3, 6, 6, generator=g) > 0.5
    lengths = torch.tensor([6, 4])
    graph = Graph.from_dense(mask, lengths=lengths, causal=True)
    expected = mask & dense_valid(2, 6, lengths, causal=True)
    assert torch.equal(graph.to_dense(), expected)
    assert torch.equal(graph.num_edges(), expected.sum((-1, -2)))


def test_from_dense_rejects_non_bool():
    with pytest.raises(ValueError, match="bool"):
        Graph.from_dense(torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("lo", "hi"), [(-1, 1), (-2, 1), (0, 0), (-5, 3), (2, 4)])
def test_band_closed_form_count_matches_dense(lo, hi, causal):
    lengths = torch.tensor([9, 5, 1, 0])
    g = Graph((4, 2, 9, 9), [Band(lo, hi)], lengths=lengths, causal=causal)
    dense = brute_band(9, lo, hi).view(1, 1, 9, 9) & dense_valid(4, 9, lengths, causal)
    assert torch.equal(g.to_dense(), dense.expand(4, 2, 9, 9))
    assert torch.equal(g.num_edges(), dense.expand(4, 2, 9, 9).sum((-1, -2)))


def test_groups_slot_and_any():
    qg = torch.tensor([0, 1, 2, -1]).view(1, 1, 4, 1)
    kg = torch.tensor([1, 1, 0, 2]).view(1, 1, 4, 1)
    g = Graph((1, 1, 4, 4), [Groups(qg, kg)])
    expected = torch.tensor(
        [[0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(g.to_dense()[0, 0], expected)
    assert int(g.num_edges()) == int(expected.sum())  # closed form
    # Two slots: slot-wise compares slot a with slot a; "any" compares all pairs.
    qg2 = torch.tensor([[0, 5], [1, 6]]).view(1, 1, 2, 2)
    kg2 = torch.tensor([[5, 9], [9, 1]]).view(1, 1, 2, 2)
    slot = Graph((1, 1, 2, 2), [Groups(qg2, kg2, "slot")]).to_dense()[0, 0]
    anym = Graph((1, 1, 2, 2), [Groups(qg2, kg2, "any")]).to_dense()[0, 0]
    assert slot.tolist() == [[False, False], [False, False]]
    assert anym.tolist() == [[True, False], [False, True]]


def test_groups_count_with_padding():
    qg = torch.tensor([[0, 0, 1, 1, 1]]).view(1, 1, 5, 1)
    g = Graph((1, 1, 5, 5), [Groups(qg, qg)], lengths=torch.tensor([4]))
    # valid tokens 0..3: group 0 has 2, group 1 has 2 -> 4 + 4 edges
    assert int(g.num_edges()) == 8
    assert int(g.to_dense().sum()) == 8


def test_row_index_globals_blocks_union():
    idx = torch.tensor([[1, -1], [0, 2], [-1, -1]]).view(1, 1, 3, 2)
    ri = RowIndex(idx)
    gl = Globals(torch.tensor([[2]]))
    bl = BlockLayout(torch.tensor([[True, False], [False, False]]).view(1, 1, 2, 2), 2)
    g = Graph((1, 1, 3, 3), [ri, gl, bl])
    expected = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    expected[0] = torch.tensor(
        [True, True, True]
    )  # row 0: block (0,0) cols 0-1, key 1, global col 2
    assert torch.equal(g.to_dense()[0, 0], expected)
    only_rows = Graph((1, 1, 3, 3), [ri]).to_dense()[0, 0]
    assert only_rows.tolist() == [[False, True, False], [True, False, True], [False] * 3]
    assert g.find(Globals) == [gl]


def test_slabs_cover_the_dense_graph():
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 2, 50, 50, generator=g) > 0.7
    graph = Graph.from_dense(mask, lengths=torch.tensor([50, 33]))
    chunks = list(graph.row_chunks(rows=7))
    assert chunks[0] == (0, 7) and chunks[-1][1] == 50
    stacked = torch.cat([graph.slab(s, e) for s, e in chunks], dim=2)
    assert torch.equal(stacked, graph.to_dense())


def test_union_and_index_batch():
    a = Graph((2, 1, 4, 4), [Band(0, 0)], lengths=torch.tensor([4, 2]))
    b = Graph.from_dense(torch.eye(4, dtype=torch.bool).flip(0).view(1, 1, 4, 4).expand(2, 1, 4, 4))
    u = a | b
    assert len(u.parts) == 2
    sub = u.index_batch(torch.tensor([1]))
    assert sub.shape == (1, 1, 4, 4)
    assert torch.equal(sub.to_dense()[0], u.to_dense()[1])
    with pytest.raises(ValueError, match="shapes"):
        a | Graph.empty((1, 1, 4, 4))


def test_bad_graph_shapes():
    with pytest.raises(ValueError, match="causal"):
        Graph((1, 1, 3, 4), causal=True)
    with pytest.raises(ValueError, match="lengths"):
        Graph((1, 1, 3, 3), lengths=torch.tensor([4]))
    with pytest.raises(ValueError, match="Groups.match"):
        Groups(
            torch.zeros(1, 1, 2, 1, dtype=torch.long),
            torch.zeros(1, 1, 2, 1, dtype=torch.long),
            "x",
        )


def test_dense_part_broadcasts_over_batch_and_heads():
    m = torch.eye(3, dtype=torch.bool).view(1, 1, 3, 3)
    g = Graph((2, 4, 3, 3), [DenseMask(m)])
    assert g.to_dense().shape == (2, 4, 3, 3)
    assert torch.equal(g.num_edges(), torch.full((2, 4), 3))


@pytest.mark.parametrize("causal", [False, True])
def test_row_index_closed_form_count(causal):
    gen = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(9, generator=gen)[:4] for _ in range(2 * 3 * 9)])
    idx = idx.view(2, 3, 9, 4)
    idx[..., 3] = -1
    lengths = torch.tensor([9, 5])
    g = Graph((2, 3, 9, 9), [RowIndex(idx)], lengths=lengths, causal=causal)
    assert torch.equal(g.num_edges(), g.to_dense().sum((-1, -2)))
