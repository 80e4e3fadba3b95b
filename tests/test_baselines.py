"""Method-specific checks of the baseline patterns and the reference rows."""

from __future__ import annotations

import math

import pytest
import torch

from sparsebench import datasets, methods
from sparsebench.bench import gold_graph, graph_metrics
from sparsebench.methods import Globals, Groups, RowIndex
from sparsebench.methods.dsa import quantize
from sparsebench.methods.routing import balanced_assign


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def qk(B=2, H=2, N=40, D=8, seed=0):
    return randn(B, H, N, D, seed=seed), randn(B, H, N, D, seed=seed + 100)


@pytest.fixture(scope="module")
def syn():
    return datasets.synthetic(num_seqs=8, layers=1, heads=2, n=32, d=8, causal=False, seed=3)


# -- BigBird -------------------------------------------------------------------------------


def test_bigbird_token_level_rows():
    r, N = 2, 40
    q, k = qk(N=N)
    g = methods.create("bigbird", num_random=r).predict(q, k)
    dense = g.to_dense()
    index = g.find(RowIndex)[0].index  # (B, H, N, r)
    for i in range(2, N - 2):
        assert (dense[:, :, i].sum(-1) == 3 + 2 + r).all(), i
        keys = index[:, :, i]
        assert (keys >= 0).all()
        forbidden = torch.tensor([0, N - 1, i - 1, i, i + 1])
        assert not torch.isin(keys, forbidden).any()
        assert dense[:, :, i].gather(-1, keys).all()
    for i in (0, N - 1):
        assert dense[:, :, i].all() and dense[:, :, :, i].all()


def test_bigbird_last_global_is_last_real_token():
    q, k = qk(N=37)
    lengths = torch.tensor([37, 19])
    ours = methods.create("bigbird", num_random=1).predict(q, k, lengths=lengths).to_dense()
    assert ours[1, :, :19, 18].all() and ours[1, :, 18, :19].all()
    padded = methods.create("bigbird", num_random=1, official_padded_length=True)
    off = padded.predict(q, k, lengths=lengths).to_dense()
    assert not off[1, :, :19, 18].all()
    assert off[0, :, :, 36].all()


def test_bigbird_seed_determinism():
    q, k = qk()
    a = methods.create("bigbird", seed=3).predict(q, k).to_dense()
    b = methods.create("bigbird", seed=3).predict(q, k).to_dense()
    c = methods.create("bigbird", seed=4).predict(q, k).to_dense()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bigbird_block_structure():
    b, N = 4, 32
    q, k = qk(N=N)
    dense = methods.create("bigbird", block_size=b, num_random=1).predict(q, k).to_dense()
    blocks = dense.view(2, 2, N // b, b, N // b, b)
    first = blocks[:, :, :, :1, :, :1]
    assert (blocks == first).all(), "every b x b block is all-on or all-off"
    kept = first[:, :, :, 0, :, 0]  # (B, H, nb, nb)
    nb = N // b
    for i in range(2, nb - 2):
        assert (kept[:, :, i].sum(-1) == 3 + 2 + 1).all()
    # A length that is not a multiple of b: the last global block is the one holding token 18.
    short = methods.create("bigbird", block_size=b, num_random=1)
    d = short.predict(q, k, lengths=torch.tensor([32, 19])).to_dense()[1]
    assert d[:, :19, 16:19].all() and d[:, 16:19, :19].all()
    assert not d[:, 19:].any() and not d[:, :, 19:].any()


def test_bigbird_plan_restricts_random_blocks():
    r, N = 2, 30
    q, k = qk(N=N)
    g = methods.create("bigbird", num_random=r, official_plan=True).predict(q, k)
    keys = g.find(RowIndex)[0].index[:, :, 1 : N - 1]
    assert keys.min() >= 1 and keys.max() <= 2 * r + 3


# -- Longformer ----------------------------------------------------------------------------


def test_longformer_global_rows_and_columns_full():
    q, k = qk(N=37)
    lengths = torch.tensor([37, 19])
    m = methods.create("longformer", max_globals=8, window=0)
    g = m.predict(q, k, lengths=lengths)
    dense = g.to_dense()
    pos = g.find(Globals)[0].positions
    for b, L in enumerate(lengths.tolist()):
        p = pos[b][pos[b] >= 0]
        assert 2 <= p.unique().numel() <= 7
        assert (p < L).all()
        for j in p.tolist():
            assert dense[b, :, j, :L].all() and dense[b, :, :L, j].all()
        others = torch.ones(L, dtype=torch.bool)
        others[p] = False
        # Other rows hold only the global columns.
        assert (dense[b, :, :L][:, others].sum(-1) == p.unique().numel()).all()


# -- OpenAI fixed ------------------------------------------------------------------------


def test_openai_fixed_matches_hand_pattern():
    n = 8
    rows_bidir = [{0, 1, 2, 3, 4, 6, 7}] * 5 + [{2, 3, 4, 5, 6, 7}] * 3
    rows_causal = [{0}, {0, 1}, {0, 1, 2}, {0, 1, 2, 3}, {0, 1, 2, 3, 4}, {2, 3, 4, 5}]
    rows_causal += [{2, 3, 4, 5, 6}, {2, 3, 4, 5, 6, 7}]
    q, k = qk(B=1, H=1, N=n)
    m = methods.create("openai_fixed", stride=4, expressivity=2)
    for causal, rows in ((False, rows_bidir), (True, rows_causal)):
        dense = m.predict(q, k, causal=causal).to_dense()[0, 0]
        got = [set(torch.nonzero(dense[i]).flatten().tolist()) for i in range(n)]
        assert got == rows, causal


# -- Reformer -----------------------------------------------------------------------------


def test_reformer_ideal_shared_vectors_symmetric_and_one_bucket_per_round():
    q, _ = qk(N=40)
    m = methods.create("reformer", n_buckets=6, n_hashes=2)
    qb, kb = m.buckets(q, q)
    assert qb.shape == (2, 2, 40, 2)
    assert ((qb >= 0) & (qb < 6)).all()
    assert torch.equal(qb, kb)
    dense = m.predict(q, q).to_dense()
    assert torch.equal(dense, dense.transpose(-1, -2))
    assert dense.diagonal(dim1=-2, dim2=-1).all()
    one = methods.create("reformer", n_buckets=6, n_hashes=1)
    b1, _ = one.buckets(q, q)
    assert torch.equal(one.predict(q, q).to_dense(), b1 == b1.transpose(-1, -2))
    concat = methods.create("reformer", vectors="concat").predict(*qk()).to_dense()
    assert torch.equal(concat, concat.transpose(-1, -2))


def _chunks(buckets, cs):
    order = sorted(range(len(buckets)), key=lambda i: (buckets[i], i))
    chunk = [0] * len(buckets)
    for rank, i in enumerate(order):
        chunk[i] = rank // cs
    return chunk


def test_reformer_executed_within_own_and_previous_chunk():
    N, cs = 24, 3
    q, k = qk(B=1, H=2, N=N)
    m = methods.create("reformer", n_buckets=4, n_hashes=2, graph="executed", chunk_size=cs)
    dense = m.predict(q, k).to_dense()
    qb, kb = m.buckets(q, k)
    nch = math.ceil(N / cs)
    for h in range(2):
        allowed = torch.zeros(N, N, dtype=torch.bool)
        for r in range(2):
            qc = _chunks(qb[0, h, :, r].tolist(), cs)
            kc = _chunks(kb[0, h, :, r].tolist(), cs)
            for i in range(N):
                for j in range(N):
                    if kc[j] in (qc[i], (qc[i] - 1) % nch):
                        allowed[i, j] = True
        assert torch.equal(dense[0, h], allowed)


def test_reformer_executed_differs_from_ideal():
    # All tokens share one direction, hence one bucket: ideal is full, chunks cut it.
    x = torch.ones(1, 1, 8, 4)
    ideal = methods.create("reformer", n_buckets=2).predict(x, x).to_dense()
    executed = methods.create("reformer", n_buckets=2, graph="executed", chunk_size=2)
    ex = executed.predict(x, x).to_dense()
    assert ideal.all()
    assert (ex.sum(-1) == 4).all()
    assert (ex <= ideal).all() and not torch.equal(ex, ideal)


# -- Routing ------------------------------------------------------------------------------


def test_routing_balanced_and_unassigned_empty():
    q, k = qk(B=2, N=37)
    lengths = torch.tensor([37, 20])
    C = 4
    g = methods.create("routing", num_clusters=C).predict(q, k, lengths=lengths)
    part = g.find(Groups)[0]
    dense = g.to_dense()
    for ids, L, axis in (
        (part.q_groups[..., 0], lengths, -1),
        (part.k_groups[..., 0], lengths, -2),
    ):
        for b in range(2):
            L = int(lengths[b])
            w = L // C + 1
            real = ids[b, :, :L]
            assert not (ids[b, :, L:] >= 0).any()
            counts = torch.stack([(real == c).sum(-1) for c in range(C)], -1)
            assert (counts <= w).all()
            assert (real >= 0).any()
            none = ids[b] < 0  # (H, N)
            edges = dense[b].any(axis)
            assert not (edges & none).any(), "a token chosen by no cluster has no edges"


def test_routing_overlapping_clusters_keep_lowest_and_leave_tokens_out():
    # Both clusters prefer the same tokens: they go to cluster 0, the others to no cluster.
    sim = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.3]).view(1, 1, 5, 1).repeat(1, 1, 1, 2)
    ids = balanced_assign(sim, torch.ones(1, 1, 5, dtype=torch.bool), torch.tensor([2]))
    assert ids.flatten().tolist() == [0, -1, 0, -1, -1]
    # Shared vectors routed by the method: unrouted tokens get no edges at all.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(10, 1).view(1, 1, 20, 2)
    g = methods.create("routing", num_clusters=4).predict(x + 0.01 * randn(1, 1, 20, 2), x)
    q_ids = g.find(Groups)[0].q_groups[0, 0, :, 0]
    dense = g.to_dense()[0, 0]
    assert not dense[q_ids < 0].any()
    assert dense[q_ids >= 0].any()


def test_routing_trained(syn):
    m = methods.create("routing_trained", num_clusters=3, batch_size=2).fit(syn.split("train"), 0)
    assert m.centroids_.shape == (2, 3, 8)
    assert torch.allclose(m.centroids_.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    off = methods.create("routing_trained", num_clusters=3, batch_size=2, official_ema=True)
    off.fit(syn.split("train"), 0)
    assert not torch.allclose(off.centroids_.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    ev = syn.split("eval").layer(0)
    assert m.predict(ev.q, ev.k, lengths=ev.lengths).num_edges().sum() > 0


# -- DSA ----------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_dsa_row_density(causal):
    N, density = 40, 0.1
    q, k = qk(N=N)
    dense = methods.create("dsa", density=density).predict(q, k, causal=causal).to_dense()
    valid = torch.arange(1, N + 1) if causal else torch.full((N,), N)
    want = torch.ceil(density * valid.double()).long()
    assert torch.equal(dense.sum(-1), want.expand(2, 2, N))


def test_dsa_threshold_density():
    q, k = qk(N=40)
    g = methods.create("dsa", density=0.2, select="threshold", bits=None).predict(q, k)
    frac = g.num_edges().double() / (40 * 40)
    assert ((frac - 0.2).abs() < 0.02).all()


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_dsa_quantisation_levels(bits):
    x = randn(2, 3, 30, 5)
    valid = torch.ones(2, 1, 30, 1, dtype=torch.bool)
    out = quantize(x, bits, valid)
    for b in range(2):
        for h in range(3):
            assert out[b, h].unique().numel() <= 2**bits
    assert torch.equal(quantize(x, None, valid), x)


def test_dsa_full_density_is_every_valid_edge():
    q, k = qk(N=37)
    lengths = torch.tensor([37, 19])
    m = methods.create("dsa", sigma=1.0, bits=None, density=1.0)
    for causal in (False, True):
        g = m.predict(q, k, lengths=lengths, causal=causal)
        assert torch.equal(g.num_edges(), g.num_valid().view(-1, 1).expand(2, 2))


def test_dsa_fitted_projection(syn):
    ev = syn.split("eval").layer(0)
    with pytest.raises(RuntimeError, match="fitted"):
        methods.create("dsa", fit_projection=True).predict(ev.q, ev.k)
    m = methods.create("dsa", fit_projection=True, sigma=1.0, bits=None, density=0.25)
    m.fit(syn.split("train"), 0)
    pred = m.predict(ev.q, ev.k, lengths=ev.lengths).to_dense()
    oracle = methods.create("topk_oracle", density=0.25)
    ref = oracle.predict(ev.q, ev.k, lengths=ev.lengths).to_dense()
    assert (pred == ref).double().mean() > 0.99
    small = methods.create("dsa", fit_projection=True, sigma=0.25).fit(syn.split("train"), 0)
    assert small.w_q_.shape == (2, 8, 2)


# -- Reference rows -----------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_topk_oracle_covers_gold(causal):
    q, k = qk(N=37)
    lengths = torch.tensor([37, 25])
    gold = gold_graph(q, k, lengths=lengths, causal=causal)
    kmax = int(gold.to_dense().sum(-1).max())
    pred = methods.create("topk_oracle", k=kmax).predict(q, k, lengths=lengths, causal=causal)
    assert graph_metrics(pred, gold)["recall"] == pytest.approx(1.0)
    fewer = methods.create("topk_oracle", k=1).predict(q, k, lengths=lengths, causal=causal)
    assert (fewer.to_dense().sum(-1) <= 1).all()


def test_random_density():
    q, k = qk(N=64)
    g = methods.create("random", density=0.2).predict(q, k)
    frac = g.num_edges().sum().item() / (2 * 2 * 64 * 64)
    assert abs(frac - 0.2) < 0.02
    again = methods.create("random", density=0.2).predict(q, k).to_dense()
    assert torch.equal(g.to_dense(), again)


def test_reformer_and_routing_on_projected_vectors():
    data = datasets.synthetic(num_seqs=6, layers=1, heads=2, n=24, d=8, seed=4)
    ev = data.split("eval").layer(0)
    for name in ("reformer", "routing", "routing_trained"):
        raw = methods.create(name).fit(data.split("train"), 0)
        proj = methods.create(name, space="projected")
        with pytest.raises(RuntimeError, match="fitted"):
            proj.predict(ev.q, ev.k, lengths=ev.lengths)
        proj = proj.fit(data.split("train"), 0)
        assert proj.projector_.w_q_.shape == (2, 8, 4)  # r = 4 learned projections
        a = raw.predict(ev.q, ev.k, lengths=ev.lengths).to_dense()
        b = proj.predict(ev.q, ev.k, lengths=ev.lengths).to_dense()
        assert a.shape == b.shape and not torch.equal(a, b), name


def test_even_and_odd_windows_by_hand():
    q = torch.zeros(1, 1, 6, 2)
    w4 = methods.create("window", w=4).predict(q, q).to_dense()[0, 0]
    # w = 4 keeps j - i in {-1, 0, 1, 2}: one behind, two ahead.
    assert w4[2].tolist() == [False, True, True, True, True, False]
    assert w4[5].tolist() == [False, False, False, False, True, True]
    w3 = methods.create("window", w=3).predict(q, q, causal=True).to_dense()[0, 0]
    assert w3[3].tolist() == [False, False, True, True, False, False]  # decoder: past half
    padded = methods.create("window", w=5).predict(q, q, lengths=torch.tensor([4])).to_dense()
    assert padded[0, 0, 3].tolist() == [False, True, True, True, False, False]
