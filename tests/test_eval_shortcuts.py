"""Work the sweep saves must not change a figure.

Each shortcut of the evaluation loop is checked against the plain computation: the exact
1.5-entmax from key lists, the output error that reuses the reference on covered rows, batches
taken in order of length, the k-means starts that stop at their own convergence, and the
encoded plays kept per tokenizer.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from entmax import entmax15

from sparsebench import datasets, methods
from sparsebench.bench.attention_error import (
    _entmax15_ranked,
    entmax_output,
    output_error,
    reference_output,
    top_logits,
)
from sparsebench.bench.evaluate import evaluate_layer
from sparsebench.methods import Graph, attention_logits, attention_probs, gold_graph
from sparsebench.methods.gold import entmax15_probs
from sparsebench.methods.sparsefinder_kmeans import kmeans


def masked_logits(B=3, H=2, N=50, seed=0, causal=True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, H, N, N, generator=g) * 3
    if causal:
        z = z.masked_fill(~torch.ones(N, N, dtype=torch.bool).tril(), float("-inf"))
    return z


@pytest.mark.parametrize("causal", [True, False])
def test_entmax15_probs_equal_the_entmax_package_bit_for_bit(causal):
    z = masked_logits(causal=causal)
    z[0, 0, 5, :] = 1.0  # a row of ties
    assert torch.equal(entmax15_probs(z), entmax15(z, dim=-1))
    assert torch.equal(entmax15_probs(z, k=4), entmax15(z, dim=-1))  # widened prefixes
    before = z.clone()
    rows = torch.tensor([0, 7, 99])
    part = entmax15_probs(z, rows).view(-1, z.shape[-1])
    assert torch.equal(z, before)  # the input is left alone
    full = entmax15(z, dim=-1).view(-1, z.shape[-1])
    assert torch.equal(part[rows], full[rows])
    others = torch.ones(part.shape[0], dtype=torch.bool)
    others[rows] = False
    assert not part[others].any()


def test_attention_probs_without_autograd_equal_those_with_it():
    z = masked_logits(seed=1)
    with torch.no_grad():
        fast = attention_probs(z, "entmax", 1.5)
    zg = z.clone().requires_grad_(True)
    slow = attention_probs(zg, "entmax", 1.5)
    slow.sum().backward()  # the training path keeps its gradient
    assert zg.grad is not None
    assert torch.equal(fast, slow.detach())


@pytest.mark.parametrize("normalizer,alpha", [("entmax", 1.5), ("entmax", 1.3), ("softmax", 1.5)])
def test_attention_probs_rows_without_keys_are_zero(normalizer, alpha):
    z = masked_logits(seed=2)
    z[0, 1, 3] = float("-inf")  # one row that may attend to nothing
    p = attention_probs(z, normalizer, alpha)
    assert not p[0, 1, 3].any()
    assert torch.allclose(p.sum(-1)[z.amax(-1) > float("-inf")], torch.tensor(1.0), atol=1e-5)
    # Without an empty row the result is the same as the row-by-row computation.
    keep = attention_probs(z[0, 1, 4:], normalizer, alpha)
    assert torch.equal(p[0, 1, 4:], keep)


def batch_of(data, n=6):
    lay = data.layer(0)
    return lay.q[:n], lay.k[:n], lay.v[:n], lay.lengths[:n]


@pytest.mark.parametrize("spec", ["window:w=3", "random", "full", "gold", "bigbird"])
def test_output_error_with_gold_equals_the_plain_computation(syn_causal, spec):
    q, k, v, lengths = batch_of(syn_causal)
    name, _, kv = spec.partition(":")
    params = {a.split("=")[0]: int(a.split("=")[1]) for a in kv.split(",") if a}
    m = methods.create(name, **params).for_data(syn_causal)
    pred = m.predict(q, k, lengths=lengths, causal=True)
    plain = output_error(q, k, v, pred, 1.5, lengths=lengths, causal=True)
    ref = reference_output(q, k, v, 1.5, lengths=lengths, causal=True)
    gold = gold_graph(q, k, alpha=1.5, lengths=lengths, causal=True, with_probs=True)
    kw = {"lengths": lengths, "causal": True}
    a = plain["per_sequence"]["output_error"]
    # width 40 holds every key of these rows; width 4 leaves most rows to the full logits
    for width in (40, 4):
        ranked = top_logits(q, k, width=width, **kw)
        for extra in ({"reference": ref, "gold": gold}, {}):
            fast = output_error(q, k, v, pred, 1.5, ranked=ranked, **extra, **kw)
            b = fast["per_sequence"]["output_error"]
            assert torch.allclose(a, b, atol=1e-6, rtol=0, equal_nan=True), (width, extra.keys())
    fast = output_error(q, k, v, pred, 1.5, reference=ref, gold=gold, **kw)
    assert torch.allclose(a, fast["per_sequence"]["output_error"], atol=1e-6, equal_nan=True)


def test_ranked_rows_give_entmax_over_the_allowed_keys_bit_for_bit(syn_bidir):
    q, k, v, lengths = batch_of(syn_bidir)
    pred = methods.create("random", density=0.4).predict(q, k, lengths=lengths, causal=False)
    pred = pred.with_validity(lengths=lengths, causal=False)
    plain = entmax_output(q, k, v, pred, 1.5)
    ranked = top_logits(q, k, lengths=lengths, causal=False, width=3)
    assert torch.equal(entmax_output(q, k, v, pred, 1.5, ranked=ranked), plain)
    allowed = pred.to_dense()
    probs, settled = _entmax15_ranked(allowed, *ranked)
    assert 0 < settled.float().mean() < 1  # both kinds of rows occur
    z = attention_logits(q, k).masked_fill(~allowed, float("-inf"))
    rows = settled.squeeze(-1) & allowed.any(-1)
    assert torch.equal(probs[rows], entmax15(z[rows], dim=-1))


def test_output_error_refuses_a_gold_graph_of_another_shape(syn_causal):
    q, k, v, lengths = batch_of(syn_causal)
    pred = methods.create("window", w=3).predict(q, k, lengths=lengths, causal=True)
    small = Graph.empty((1, 1, 4, 4))
    with pytest.raises(ValueError, match="gold must be the gold Graph"):
        output_error(q, k, v, pred, lengths=lengths, causal=True, gold=small)


def test_batches_follow_an_order_and_by_length_sorts_stably():
    data = datasets.synthetic(num_seqs=5, layers=1, heads=1, n=30, d=8, causal=True, seed=4)
    data = dataclasses.replace(data, lengths=torch.tensor([30, 12, 30, 5, 12]))
    order = data.by_length()
    assert order.tolist() == [3, 1, 4, 0, 2]
    sizes = [(b.q.shape[0], b.q.shape[2]) for b in data.batches(0, 2, order=order)]
    assert sizes == [(2, 12), (2, 30), (1, 30)]  # each batch trimmed to its longest member
    first = next(data.batches(0, 2, order=order))
    assert torch.equal(first.q, data.q[[3, 1], 0, :, :12])


@pytest.mark.parametrize("spec", ["window:w=5", "gold", "sparsefinder_quantize"])
def test_evaluate_layer_reports_per_sequence_figures_in_data_order(syn_causal, spec):
    eval_ = syn_causal.split("eval") if "eval" in syn_causal.split_names else syn_causal
    name, _, kv = spec.partition(":")
    m = methods.create(name, **({"w": 5} if kv else {})).for_data(syn_causal)
    if m.learns:
        m = m.fit(syn_causal.split("train"), 0)
    flip = torch.arange(len(eval_) - 1, -1, -1)
    a = evaluate_layer(m, eval_, 0, batch_size=3)
    b = evaluate_layer(m, eval_.select(flip), 0, batch_size=3)
    for metric in ("recall", "sparsity", "output_error"):
        pa = torch.tensor(a["per_sequence"][metric])
        pb = torch.tensor(b["per_sequence"][metric])
        assert torch.allclose(pa, pb.flip(0), atol=1e-6, equal_nan=True)
    assert a["sequence_lengths"] == b["sequence_lengths"][::-1]


def test_every_kmeans_start_stops_at_a_lloyd_fixed_point():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    x = torch.cat([c + torch.randn(60, 2, generator=g) for c in centers]).unsqueeze(0)
    x = torch.cat([x, x.flip(1) * 3], 0)  # two heads that converge at different iterations
    cent = kmeans(x, 3, g, n_init=4, max_iter=300, tol=0.0)
    for h in range(2):
        assign = torch.cdist(x[h], cent[h]).argmin(-1)
        means = torch.stack([x[h][assign == c].mean(0) for c in range(3)])
        assert torch.allclose(means, cent[h], atol=1e-5)
    found = sorted(cent[0].round().tolist())
    assert found == sorted(centers.tolist())


def test_token_streams_encode_once_and_hand_out_copies(monkeypatch):
    from sparsebench.datasets import train

    calls = []

    class Tok:
        vocab = ["a", "b"]
        merges = [("a", "b")]

        def encode(self, text):
            calls.append(text)
            return [len(text) % 7, 1]

    monkeypatch.setattr(train, "_STREAMS", {})
    monkeypatch.setattr(train, "play_texts", lambda: {"p1": "xx", "p2": "yyy"})
    monkeypatch.setattr(train, "split_plays", lambda: {"train": ["p1"], "eval": ["p2"]})
    first = train.token_streams(Tok())
    first["eval"].append(torch.tensor([9]))
    second = train.token_streams(Tok())
    assert len(calls) == 2 and len(second["eval"]) == 1
    assert second["train"][0].tolist() == [2, 1]


@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 2, 300, 508), (3, 1, 64, 1100), (2, 2, 0, 4)])
def test_count_true_and_blocks_equal_plain_sums(shape):
    from sparsebench.bench.masks import block_occupancy, count_true

    g = torch.Generator().manual_seed(sum(shape))
    mask = torch.rand(shape, generator=g) < 0.4
    assert torch.equal(count_true(mask, lead=2), mask.sum((-1, -2)).int())
    assert torch.equal(count_true(mask, lead=3), mask.sum(-1).int())
    if shape[2]:
        odd = mask[:, :, 1:]  # not contiguous
        assert torch.equal(count_true(odd, lead=2), odd.sum((-1, -2)).int())
    for bs in (1, 8, 64):
        B, H, c, M = shape
        if not c:
            continue
        pad = torch.nn.functional.pad(mask, (0, (-M) % bs, 0, (-c) % bs))
        plain = pad.view(B, H, pad.shape[2] // bs, bs, pad.shape[3] // bs, bs).any(-1).any(-2)
        assert torch.equal(block_occupancy(mask, bs), plain)


def test_materialized_graph_slabs_are_its_valid_edges_and_lose_the_shortcut_on_new_lengths():
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 2, 9, 9, generator=g) < 0.5
    lengths = torch.tensor([9, 5])
    graph = Graph.from_dense(mask, lengths=lengths, causal=True)
    mat = graph.materialize()
    assert torch.equal(mat.slab(2, 7), graph.slab(2, 7))
    assert mat.with_validity(lengths=lengths.clone()).parts[0].valid  # same lengths: kept
    shorter = mat.with_validity(lengths=torch.tensor([4, 4]))
    assert not shorter.parts[0].valid
    assert torch.equal(
        shorter.to_dense(), graph.with_validity(lengths=torch.tensor([4, 4])).to_dense()
    )
