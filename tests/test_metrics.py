"""Every metric on tiny graphs computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from sparsebench.bench import Graph, average_layers, gold_graph, graph_metrics, output_error
from sparsebench.methods import Band


def g(rows, lengths=None, causal=False):
    t = torch.tensor(rows, dtype=torch.bool)
    return Graph.from_dense(t.view(1, 1, *t.shape), lengths=lengths, causal=causal)


def test_hand_computed_recall_sparsity_exact_precision():
    gold = g([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    pred = g([[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    m = graph_metrics(pred, gold)
    # |G| = 4, |Ĝ| = 4, |Ĝ∩G| = 3, valid = 9
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["sparsity"] == pytest.approx(1 - 4 / 9)
    assert m["gold_sparsity"] == pytest.approx(1 - 4 / 9)
    assert m["exact"] == pytest.approx(2 / 3)  # rows 1 and 2 fully recovered


def test_padding_is_excluded():
    gold = g([[1, 0, 1], [0, 1, 1], [1, 1, 1]], lengths=torch.tensor([2]))
    pred = g([[1, 1, 1], [0, 0, 1], [1, 1, 1]], lengths=torch.tensor([2]))
    m = graph_metrics(pred, gold)
    # valid 2x2: gold {(0,0),(1,1)}, pred {(0,0),(0,1)}
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["sparsity"] == pytest.approx(1 - 2 / 4)
    assert m["exact"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx(1 / 2)


def test_paper_causal_window_sparsity():
    # The reference derivation: window 3, causal, lengths {10, 7} -> sparsity 0.59513.
    lengths = torch.tensor([10, 7])
    pred = Graph((2, 1, 10, 10), [Band(-1, 1)], lengths=lengths, causal=True)
    gold = Graph((2, 1, 10, 10), [Band(0, 0)], lengths=lengths, causal=True)
    m = graph_metrics(pred, gold)
    expected = ((1 - 19 / 55) + (1 - 13 / 28)) / 2
    assert m["sparsity"] == pytest.approx(expected)
    assert round(m["sparsity"], 5) == 0.59513
    assert m["recall"] == 1.0 and m["exact"] == 1.0


def test_macro_average_over_sequences_then_heads():
    # Two sequences, two heads; per (b, h) recall: b0: [1, 0.5]; b1: [0, 1]
    gold = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    pred = torch.zeros_like(gold)
    gold[0, 0, 0, 0] = pred[0, 0, 0, 0] = True
    gold[0, 1, 0, :] = True
    pred[0, 1, 0, 0] = True
    gold[1, 0, 1, 1] = True
    gold[1, 1, 1, 0] = pred[1, 1, 1, 0] = True
    m = graph_metrics(Graph.from_dense(pred), Graph.from_dense(gold))
    assert m["per_head"]["recall"] == pytest.approx([0.5, 0.75])
    assert m["recall"] == pytest.approx(0.625)
    # A micro average would give (1 + 1 + 0 + 1) / 5 = 0.6: the figure must be the macro one.


def test_macro_average_skips_nan_sequences():
    from sparsebench.bench.metrics import macro_average

    per_bh = torch.tensor([[1.0, float("nan")], [0.0, 0.5], [float("nan"), 1.0]])
    value, per_head = macro_average(per_bh)
    assert per_head == pytest.approx([0.5, 0.75]) and value == pytest.approx(0.625)


def test_lengths_are_checked_against_the_batch():
    gold = Graph((2, 1, 4, 4), [Band(0, 0)])
    with pytest.raises(ValueError, match="3 entries for a batch of 2"):
        graph_metrics(gold, gold, lengths=[4, 4, 4])
    assert graph_metrics(gold, gold, lengths=torch.tensor([4, 2], dtype=torch.int32))["recall"] == 1


def test_mass_recall_and_block_sparsity():
    gold = g([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]])
    pred = g([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    probs = torch.tensor([[0.7, 0.3, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.6, 0.4], [0, 0, 0, 1.0]]).view(
        1, 1, 4, 4
    )
    m = graph_metrics(pred, gold, probs=probs, block_size=2)
    assert m["mass_recall"] == pytest.approx((0.7 + 1.0 + 0 + 1.0) / 4)
    # pred touches blocks (0,0) and (1,1) of 4; gold the same two.
    assert m["block_sparsity"] == pytest.approx(0.5)
    assert m["gold_block_sparsity"] == pytest.approx(0.5)


def test_causal_block_sparsity_counts_lower_blocks_only():
    lengths = torch.tensor([5])
    pred = Graph((1, 1, 5, 5), [Band(0, 0)], lengths=lengths, causal=True)
    m = graph_metrics(pred, pred, block_size=2)
    # 3 block rows; valid blocks = 3*4/2 = 6; the diagonal touches the 3 diagonal blocks.
    assert m["block_sparsity"] == pytest.approx(1 - 3 / 6)


def test_empty_prediction_and_empty_sequence():
    gold = Graph((2, 1, 3, 3), [Band(0, 0)], lengths=torch.tensor([3, 0]))
    pred = Graph.empty((2, 1, 3, 3), lengths=torch.tensor([3, 0]))
    m = graph_metrics(pred, gold)
    assert m["recall"] == 0.0 and m["sparsity"] == 1.0 and m["exact"] == 0.0
    assert math.isnan(m["precision"])  # no predicted edge anywhere: undefined, not 0 or 1


def test_gold_against_itself_and_full():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 12, 8, generator=gen)
    k = torch.randn(2, 2, 12, 8, generator=gen)
    lengths = torch.tensor([12, 7])
    gold = gold_graph(q, k, lengths=lengths, causal=True, with_probs=True)
    m = graph_metrics(gold, gold, probs=gold)
    assert m["recall"] == 1.0 and m["exact"] == 1.0 and m["precision"] == 1.0
    assert m["mass_recall"] == pytest.approx(1.0)
    full = Graph((2, 2, 12, 12), [Band(-12, 12)], lengths=lengths, causal=True)
    mf = graph_metrics(full, gold)
    assert mf["recall"] == 1.0 and mf["sparsity"] == 0.0
    assert mf["precision"] == pytest.approx(1 - m["gold_sparsity"], abs=0.05)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        graph_metrics(Graph.empty((1, 1, 2, 2)), Graph.empty((1, 1, 3, 3)))


def test_output_error_hand_case():
    # One query, two keys with equal logits: full 1.5-entmax gives (0.5, 0.5); keeping only key
    # 0 gives (1, 0). With v = [[1], [0]]: full output 0.5, restricted 1 -> error 1.
    q = torch.zeros(1, 1, 1, 1)
    k = torch.zeros(1, 1, 2, 1)
    v = torch.tensor([[1.0], [0.0]]).view(1, 1, 2, 1)
    pred = Graph.from_dense(torch.tensor([[True, False]]).view(1, 1, 1, 2))
    out = output_error(q, k, v, pred)
    assert out["output_error"] == pytest.approx(1.0)
    full = Graph.from_dense(torch.ones(1, 1, 1, 2, dtype=torch.bool))
    assert output_error(q, k, v, full)["output_error"] == pytest.approx(0.0)
    # An empty row outputs zero, so the error is exactly 1 (not a silent full attention).
    empty = Graph.empty((1, 1, 1, 2))
    assert output_error(q, k, v, empty)["output_error"] == pytest.approx(1.0)


def test_output_error_is_zero_for_gold_graph():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 16, 8, generator=gen) for _ in range(3))
    lengths = torch.tensor([16, 9])
    gold = gold_graph(q, k, lengths=lengths, causal=True)
    err = output_error(q, k, v, gold, lengths=lengths, causal=True)
    assert err["output_error"] == pytest.approx(0.0, abs=1e-6)
    window = Graph((2, 2, 16, 16), [Band(0, 0)], lengths=lengths, causal=True)
    assert output_error(q, k, v, window)["output_error"] > 0.05


def test_average_layers_skips_nan():
    out = average_layers([{"recall": 1.0, "x": float("nan")}, {"recall": 0.5, "x": 2.0}])
    assert out == {"recall": 0.75, "x": 2.0}


def test_sparse_gold_path_equals_dense_path():
    # The key-list fast path for a gold RowIndex must give exactly the dense figures.
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(3, 2, 45, 8, generator=gen)
    k = torch.randn(3, 2, 45, 8, generator=gen)
    lengths = torch.tensor([45, 30, 7])
    for causal in (False, True):
        gold = gold_graph(q, k, lengths=lengths, causal=causal, with_probs=True)
        assert len(gold.parts) == 1
        dense_gold = Graph.from_dense(gold.to_dense(), lengths=lengths, causal=causal)
        probs = gold.parts[0].slab_weights(0, 45, gold.shape)
        # Several predictions against one gold object: the gold side is computed once and
        # reused, and must still give the dense figures each time (and per block size).
        for density, bs in ((0.3, 8), (0.05, 8), (0.6, 4), (0.3, None)):
            pred = Graph.from_dense(
                torch.rand(3, 2, 45, 45, generator=gen) < density, lengths=lengths, causal=causal
            )
            fast = graph_metrics(pred, gold, probs=gold, block_size=bs)
            slow = graph_metrics(pred, dense_gold, probs=probs, block_size=bs)
            keys = ["recall", "sparsity", "exact", "precision", "mass_recall", "gold_sparsity"]
            if bs is not None:
                keys += ["block_sparsity", "gold_block_sparsity"]
            for key in keys:
                assert fast[key] == pytest.approx(slow[key], abs=1e-12), (key, density, bs)
            for key in keys:
                assert torch.allclose(
                    fast["per_sequence"][key], slow["per_sequence"][key], equal_nan=True
                ), key


@pytest.mark.parametrize("alpha", [1.5, 1.7])
def test_output_error_paths_agree_with_the_dense_kernel(alpha):
    # The threshold path of entmax_output gives exactly the dense kernel's attention (empty
    # and padded rows included), and a precomputed reference gives the same error.
    from sparsebench.bench.attention_error import entmax_output, reference_output
    from sparsebench.bench.kernels.dense import masked_attention

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(3, 2, 40, 8, generator=gen) for _ in range(3))
    lengths = torch.tensor([40, 23, 5])
    for causal in (False, True):
        pred = Graph.from_dense(
            torch.rand(3, 2, 40, 40, generator=gen) < 0.3, lengths=lengths, causal=causal
        )
        fast = entmax_output(q, k, v, pred, alpha)
        dense = masked_attention(q, k, v, pred, "entmax", alpha)
        assert torch.allclose(fast, dense, atol=1e-6)
        if alpha == 1.5:
            assert torch.equal(fast, dense)
        ref = reference_output(q, k, v, alpha, lengths=lengths, causal=causal)
        direct = output_error(q, k, v, pred, alpha, lengths=lengths, causal=causal)
        reused = output_error(q, k, v, pred, alpha, lengths=lengths, causal=causal, reference=ref)
        assert direct["output_error"] == reused["output_error"] > 0.01
        assert direct["per_sequence"]["output_error"].shape == (3, 2)
    with pytest.raises(ValueError, match="reference has shape"):
        output_error(q, k, v, pred, reference=ref[:, :, :5])
