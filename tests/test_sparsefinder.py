from __future__ import annotations

import copy
import math
from functools import cache

import pytest
import torch

from sparsebench import datasets, methods
from sparsebench.bench import gold_graph, graph_metrics
from sparsebench.methods import BlockLayout, Groups
from sparsebench.methods import _learned as P
from sparsebench.methods.sparsefinder import dynamic_buckets, fixed_buckets
from sparsebench.methods.sparsefinder_kmeans import SparsefinderKMeans

NAMES = [
    "sparsefinder_distance",
    "sparsefinder_quantize",
    "sparsefinder_kmeans",
    "sparsefinder_blocks",
]
# Fewer k-means restarts keep the file fast; the algorithm is the same.
FAST = {"sparsefinder_kmeans": {"n_init": 2}, "sparsefinder_blocks": {"n_init": 2}}


@cache
def data(causal: bool = False, seed: int = 0):
    return datasets.synthetic(num_seqs=8, layers=1, heads=2, n=32, d=16, causal=causal, seed=seed)


@cache
def fitted(name: str, causal: bool = False, **params):
    kw = {**FAST.get(name, {}), **params}
    return methods.create(name, **kw).fit(data(causal).split("train"), 0)


def eval_layer(causal: bool = False):
    return data(causal).split("eval").layer(0)


def test_registered_with_tags():
    for name in NAMES:
        cls = methods.get(name)
        assert cls.tags.requires_fit and cls.tags.stochastic
        assert methods.create(name).learns
        assert "Treviso" in cls.__doc__ and "2109.12188" in cls.__doc__
        assert {"paper", "paper_mlm", "quick"} <= set(cls.grid)
    assert set(NAMES) == set(methods.names("sparsefinder*"))


def test_loss_matches_hand_computation():
    # Sentence 0 (length 2; query 2 is padding): r = 1, points on a line.
    #   q0 = 0: positive k0 (D = 0), negative k2 (D = 9) -> max(0, 1 + 0 - 9) = 0
    #   q1 = 1: positive k1 (D = 1), negative k0 (D = 1) -> max(0, 1 + 1 - 1) = 1
    #   sentence loss = (0 + 1) / 2 = 0.5
    # Sentence 1 (length 1): q0 = 0, positive k0 (D = 0), negative k1 (D = 4) -> 0.
    # Mean over the two sentences: 0.25.
    qp = torch.tensor([[0.0], [1.0], [50.0]]).view(1, 1, 3, 1).repeat(2, 1, 1, 1)
    kp = torch.tensor([[0.0], [2.0], [3.0]]).view(1, 1, 3, 1).repeat(2, 1, 1, 1)
    pos = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    neg = torch.zeros_like(pos)
    pos[0, 0, 0, 0] = pos[0, 0, 1, 1] = True
    neg[0, 0, 0, 2] = neg[0, 0, 1, 0] = True
    pos[0, 0, 2, 0] = True  # a padding query: must not count
    pos[1, 0, 0, 0] = True
    neg[1, 0, 0, 1] = True
    lengths = torch.tensor([2, 1])
    loss = P.hinge_loss(qp, kp, pos, neg, lengths, margin=1.0)
    assert float(loss) == pytest.approx(0.25)
    # One hinge on the sums, not a sum of per-triplet hinges: two positives at D = 1 and 4 and
    # negatives at D = 9 and 0 give max(0, 1 + 5 - 9) = 0 (per-triplet would give 5).
    qp1 = torch.zeros(1, 1, 1, 1)
    kp1 = torch.tensor([1.0, 2.0, 3.0, 0.0]).view(1, 1, 4, 1)
    pos1 = torch.tensor([True, True, False, False]).view(1, 1, 1, 4)
    loss1 = P.hinge_loss(qp1, kp1, pos1, ~pos1, None, margin=1.0)
    assert float(loss1) == 0.0


def test_negatives_balanced_valid_and_seeded():
    g = torch.Generator().manual_seed(0)
    B, H, N = 2, 2, 12
    lengths = torch.tensor([12, 7])
    pos = torch.rand(B, H, N, N, generator=g) < 0.2
    valid = methods.valid_pairs(B, N, N, lengths, causal=True)
    pos &= valid
    neg = P.sample_negatives(pos, valid, torch.Generator().manual_seed(1))
    assert not (neg & pos).any()
    assert not (neg & ~valid).any(), "a future or padding key was drawn"
    avail = (valid & ~pos).sum(-1)
    assert torch.equal(neg.sum(-1), torch.minimum(pos.sum(-1), avail))
    again = P.sample_negatives(pos, valid, torch.Generator().manual_seed(1))
    other = P.sample_negatives(pos, valid, torch.Generator().manual_seed(2))
    assert torch.equal(neg, again) and not torch.equal(neg, other)
    # The official behaviour lets future keys be negatives in a decoder.
    loose = methods.valid_pairs(B, N, N, lengths, causal=False)
    neg_f = P.sample_negatives(pos, loose, torch.Generator().manual_seed(1))
    future = torch.ones(N, N, dtype=torch.bool).triu(1)
    assert (neg_f & future).any()


def test_future_negative_switch_changes_training():
    a = fitted("sparsefinder_distance", True)
    b = fitted("sparsefinder_distance", True, official_future_negatives=True)
    assert not torch.equal(a.w_q_, b.w_q_)


def test_fit_lowers_loss_and_raises_recall_at_equal_sparsity():
    train = data().split("train")
    lay = eval_layer()
    gold = gold_graph(lay.q, lay.k, lengths=lay.lengths)
    before = methods.create("sparsefinder_distance", epochs=0).fit(train, 0)
    # Six training sequences: small batches give the optimiser enough steps.
    after = methods.create("sparsefinder_distance", epochs=10, batch_size=2).fit(train, 0)
    assert after.loss_history_[-1] < after.loss_history_[0]
    assert after.projection_loss(train, 0) < 0.5 * before.projection_loss(train, 0)
    recalls = []
    for m in (before, after):
        # Threshold at the 30% quantile of valid distances: both keep about 30% of the pairs.
        d = P.sq_dists(m._project(lay.q, "q"), m._project(lay.k, "k"))
        valid = methods.valid_pairs(*d.shape[:1], d.shape[2], d.shape[3], lay.lengths, False)
        m.t = float(torch.quantile(d[valid.expand_as(d)], 0.3))
        res = graph_metrics(m.predict(lay.q, lay.k, lengths=lay.lengths), gold)
        assert res["sparsity"] == pytest.approx(0.7, abs=0.05)
        recalls.append(res["recall"])
    assert recalls[1] > recalls[0] + 0.15


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name):
    lay = eval_layer()
    a = fitted(name).predict(lay.q, lay.k, lengths=lay.lengths).to_dense()
    b = methods.create(name, **FAST.get(name, {})).fit(data().split("train"), 0)
    assert torch.equal(a, b.predict(lay.q, lay.k, lengths=lay.lengths).to_dense())
    c = fitted(name, seed=7)
    assert not torch.equal(fitted(name).w_q_, c.w_q_)
    assert not torch.equal(a, c.predict(lay.q, lay.k, lengths=lay.lengths).to_dense())


def test_fixed_buckets_hold_s_real_tokens_and_skip_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 23, 4, generator=g)
    lengths = torch.tensor([23, 10, 1])
    S = 4
    ids = fixed_buckets(x, lengths, S)
    for b, L in enumerate(lengths.tolist()):
        assert (ids[b, :, L:] == -1).all()
        for h in range(2):
            for c in range(4):
                counts = torch.bincount(ids[b, h, :L, c], minlength=math.ceil(L / S))
                want = [S] * (L // S) + ([L % S] if L % S else [])
                assert counts.tolist() == want
                # Buckets follow the order of the values: bucket t holds the t-th S smallest.
                order = x[b, h, :L, c].argsort()
                assert torch.equal(ids[b, h, order, c], torch.arange(L) // S)
    # Garbage in the padding changes nothing.
    noisy = x + 100 * (torch.arange(23).view(1, 1, -1, 1) >= lengths.view(-1, 1, 1, 1))
    assert torch.equal(fixed_buckets(noisy, lengths, S), ids)


def test_quantize_graph_uses_slot_groups():
    m = fitted("sparsefinder_quantize")
    lay = eval_layer()
    g = m.predict(lay.q, lay.k, lengths=lay.lengths)
    groups = g.find(Groups)[0]
    assert groups.match == "slot" and groups.q_groups.shape[-1] == m.proj_dim
    qg, kg = groups.q_groups, groups.k_groups
    want = (qg.unsqueeze(3) == kg.unsqueeze(2)).any(-1)  # same bucket in some coordinate
    valid = methods.valid_pairs(qg.shape[0], qg.shape[2], kg.shape[2], lay.lengths, False)
    assert torch.equal(g.to_dense(), want & valid)
    # Each query bucket of S real tokens in one coordinate meets the key bucket of equal rank.
    assert (qg[..., 0].max(-1).values == (lay.lengths.view(-1, 1) - 1) // m.bucket_size).all()


def test_dynamic_bucket_boundaries():
    # L = 8, S = 2 -> K = 4 bins, boundaries tanh-space [-0.5, 0, 0.5], a value on a boundary
    # goes to the lower bin (right=False).
    v = torch.tensor([-0.9, -0.6, -0.4, 0.0, 0.2, 0.45, 0.6, 0.99])
    x = torch.atanh(v).view(1, 1, 8, 1)
    ids = dynamic_buckets(x, torch.tensor([8]), 2, 1.0, False)
    assert ids.flatten().tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # Padded batch length 16 (bug B8) gives K = 8 bins: boundaries -0.75, -0.5, ..., 0.75.
    xp = torch.nn.functional.pad(x, (0, 0, 0, 8))
    ids_pad = dynamic_buckets(xp, torch.tensor([8]), 2, 1.0, True)
    assert ids_pad.flatten()[:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert (ids_pad.flatten()[8:] == -1).all()
    own = dynamic_buckets(xp, torch.tensor([8]), 2, 1.0, False)  # the sentence's length
    assert torch.equal(own[..., :8, :], ids)
    # Temperature squashes towards the middle bins.
    ids_cold = dynamic_buckets(x * 0 + 0.1, torch.tensor([8]), 2, 0.01, False)
    assert (ids_cold == 2).all()


def _toy_kmeans(**params) -> SparsefinderKMeans:
    """d = r = 1, identity projection and centroids 0, 1, 10, 11 on a line."""
    m = SparsefinderKMeans(**{"proj_dim": 1, "num_clusters": 4, "top_clusters": 2, **params})
    m.w_q_ = m.w_k_ = torch.ones(1, 1, 1)
    m.b_q_ = m.b_k_ = torch.zeros(1, 1)
    m.centroids_ = torch.tensor([0.0, 1.0, 10.0, 11.0]).view(1, 1, 4, 1)
    return m


def test_kmeans_topk_intersection_vs_per_rank_and_forced_diagonal():
    # q0 = 0.4: nearest (0, 1); k0 = 10.4: (2, 3); k1 = 0.6: (1, 0); k2 = 0.3: (0, 1).
    q = torch.tensor([0.4, 10.6, 0.45]).view(1, 1, 3, 1)
    k = torch.tensor([10.4, 0.6, 0.3]).view(1, 1, 3, 1)
    inter = _toy_kmeans().predict(q, k).to_dense()[0, 0]
    rank = _toy_kmeans(topk_semantics="per_rank").predict(q, k).to_dense()[0, 0]
    diag = _toy_kmeans(official_forced_diagonal=True).predict(q, k).to_dense()[0, 0]
    # q0 meets k1 (sets {0,1} = {1,0}) and k2; per rank only k2 (same order).
    assert inter[0].tolist() == [False, True, True]
    assert rank[0].tolist() == [False, False, True]
    assert inter[1].tolist() == [True, False, False]  # q1 = 10.6: (3, 2) vs k0 (2, 3)
    assert rank[1].tolist() == [False, False, False]
    # C = 4, top-2 (bug B4): the diagonal is forced only where some cluster is in neither
    # top set, i.e. where the sets intersect, so it adds no edge here (test_official.py).
    assert torch.equal(diag, inter) and not diag[0, 0] and diag[2, 2]
    # With one cluster per vector both semantics coincide and no diagonal is forced.
    one = _toy_kmeans(top_clusters=1, official_forced_diagonal=True).predict(q, k).to_dense()
    one_rank = _toy_kmeans(top_clusters=1, topk_semantics="per_rank").predict(q, k).to_dense()
    assert torch.equal(one, one_rank) and not one[0, 0, 0, 0]


def test_kmeans_runs_offset_ids_and_fit_centroids():
    m = fitted("sparsefinder_kmeans", runs=2, top_clusters=2)
    assert m.centroids_.shape == (2, 2, m.num_clusters, m.proj_dim)
    lay = eval_layer()
    part = m.predict(lay.q, lay.k, lengths=lay.lengths).find(Groups)[0]
    assert part.match == "any"
    ids = part.q_groups
    C = m.num_clusters
    assert (ids[..., :2] < C).all() and (ids[..., 2:] >= C).all(), "runs never share an id"
    # Centroids are the means of their points: k-means converged on the training units.
    x = m._train_units(data().split("train"), 0)
    cent = m.centroids_[:, 0]
    assign = P.sq_dists(x, cent).argmin(-1)
    for h in range(2):
        for c in range(C):
            pts = x[h, assign[h] == c]
            if len(pts):
                assert torch.allclose(pts.mean(0), cent[h, c], atol=1e-3)


def test_distance_threshold_extremes():
    lay = eval_layer()
    gold = gold_graph(lay.q, lay.k, lengths=lay.lengths)
    for dist in ("l2", "euclidean", "cos"):
        m = copy.copy(fitted("sparsefinder_distance"))
        m.dist, m.t = dist, 1e9
        assert graph_metrics(m.predict(lay.q, lay.k, lengths=lay.lengths), gold)["recall"] == 1
        m.t = 0.0
        if dist != "cos":
            assert m.predict(lay.q, lay.k, lengths=lay.lengths).num_edges().sum() == 0
    m.dist = "manhattan"
    with pytest.raises(ValueError, match="dist"):
        m.predict(lay.q, lay.k, lengths=lay.lengths)


def test_blocks_graph_is_a_union_of_blocks():
    m = fitted("sparsefinder_blocks")
    b = m.block_size
    lay = eval_layer()
    # Full-length inputs, N a multiple of b: every b x b tile is all on or all off.
    q, k = lay.q[:, :, :28], lay.k[:, :, :28]
    g = m.predict(q, k)
    assert isinstance(g.parts[0], BlockLayout) and g.parts[0].block_size == b
    dense = g.to_dense()
    B, H, N, _ = dense.shape
    tiles = dense.view(B, H, N // b, b, N // b, b)
    assert (tiles.all(3).all(-1) == tiles.any(3).any(-1)).all()
    assert dense.any() and not dense.all()
    # With padding the layout still never reaches a padded key or query.
    gp = m.predict(lay.q, lay.k, lengths=lay.lengths).to_dense()
    for s, L in enumerate(lay.lengths.tolist()):
        assert not gp[s, :, L:].any() and not gp[s, :, :, L:].any()


def test_blocks_training_beats_untrained():
    train = data().split("train")
    before = methods.create("sparsefinder_blocks", epochs=0, n_init=2).fit(train, 0)
    after = methods.create("sparsefinder_blocks", epochs=3, n_init=2).fit(train, 0)
    assert after.projection_loss(train, 0) < 0.5 * before.projection_loss(train, 0)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("name", NAMES)
def test_padding_causal_and_tiny_inputs(name, causal):
    m = fitted(name, causal)
    lay = eval_layer(causal)
    pad = torch.arange(lay.q.shape[2]).view(1, 1, -1, 1) >= lay.lengths.view(-1, 1, 1, 1)
    noise = torch.randn(lay.q.shape, generator=torch.Generator().manual_seed(3)) * 5
    g = m.predict(lay.q, lay.k, lengths=lay.lengths, causal=causal).to_dense()
    g2 = m.predict(lay.q + noise * pad, lay.k + noise * pad, lengths=lay.lengths, causal=causal)
    assert torch.equal(g, g2.to_dense()), "padding values changed the graph"
    N = g.shape[-1]
    for s, L in enumerate(lay.lengths.tolist()):
        assert not g[s, :, :, L:].any() and not g[s, :, L:].any()
    if causal:
        assert not (g & torch.ones(N, N, dtype=torch.bool).triu(1)).any()
    x = torch.randn(1, 2, 1, 16, generator=torch.Generator().manual_seed(4))
    assert m.predict(x, x, causal=causal).to_dense().shape == (1, 2, 1, 1)
    x = torch.randn(2, 2, 13, 16, generator=torch.Generator().manual_seed(5))
    out = m.predict(x, x, lengths=torch.tensor([13, 5]), causal=causal).to_dense()
    assert not out[1, :, 5:].any() and not out[1, :, :, 5:].any()


def test_window_and_globals_compose():
    lay = eval_layer()
    m = copy.copy(fitted("sparsefinder_distance"))
    m.t = 0.0
    m.window, m.global_tokens = 3, 1
    dense = m.predict(lay.q, lay.k, lengths=lay.lengths).to_dense()
    L = int(lay.lengths[0])
    assert dense[0, :, :L, 0].all() and dense[0, :, 0, :L].all()
    assert dense[0, :, 5, 4:7].all() and not dense[0, :, 5, 8:].any()


def test_double_update_switch_doubles_first_step():
    train = data().split("train")
    one_step = {"batch_size": len(train), "epochs": 1}
    init = methods.create("sparsefinder_distance", epochs=0).fit(train, 0).w_q_
    plain = methods.create("sparsefinder_distance", **one_step).fit(train, 0).w_q_
    double = (
        methods.create("sparsefinder_distance", official_double_update=True, **one_step)
        .fit(train, 0)
        .w_q_
    )
    step, step2 = (plain - init).abs().mean(), (double - init).abs().mean()
    assert step == pytest.approx(0.01, rel=0.05)
    assert step2 == pytest.approx(0.02, rel=0.05)


def test_official_init_bounds():
    train = data().split("train")
    m = methods.create("sparsefinder_distance", epochs=0).fit(train, 0)
    o = methods.create("sparsefinder_distance", epochs=0, official_init=True).fit(train, 0)
    d, r = 16, 4
    assert m.w_q_.abs().max() <= 1 / math.sqrt(d) and m.b_q_.abs().max() <= 1 / math.sqrt(d)
    assert o.w_q_.abs().max() <= 1 / math.sqrt(d * r) and o.b_q_.abs().max() > 1 / math.sqrt(d)


def test_separate_projectors_and_bad_params():
    m = fitted("sparsefinder_distance", share_projectors=False)
    assert not torch.equal(m.w_q_, m.w_k_)
    assert torch.equal(fitted("sparsefinder_distance").w_q_, fitted("sparsefinder_distance").w_k_)
    with pytest.raises(ValueError, match="top_clusters"):
        methods.create("sparsefinder_kmeans", top_clusters=20).fit(data().split("train"), 0)
    with pytest.raises(ValueError, match="proj_dim"):
        methods.create("sparsefinder_quantize", proj_dim=0).fit(data().split("train"), 0)
    lay = eval_layer()
    with pytest.raises(ValueError, match="heads"):
        fitted("sparsefinder_quantize").predict(lay.q[:, :1], lay.k[:, :1])


def test_fixed_buckets_with_ties_hold_exactly_s_tokens():
    from sparsebench.methods.sparsefinder import fixed_buckets

    # Every projected value equal: ranks follow positions (stable), buckets still hold S each.
    x = torch.zeros(1, 1, 10, 2)
    b = fixed_buckets(x, torch.tensor([7]), 3)
    assert b[0, 0, :, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, -1, -1, -1]
    x2 = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0]).view(1, 1, 6, 1)
    b2 = fixed_buckets(x2, None, 2)[0, 0, :, 0].tolist()
    # Sorted: the three 0.0 (positions 1, 3, 5) then the three 1.0 (0, 2, 4), two per bucket.
    assert b2 == [1, 0, 2, 0, 2, 1]


def test_projector_trained_once_per_split_and_projection_parameters():
    train = data().split("train")
    a = methods.create("sparsefinder_kmeans", num_clusters=2, n_init=1).fit(train, 0)
    b = methods.create("sparsefinder_distance", t=0.5).fit(train, 0)
    assert a.w_q_ is b.w_q_  # same projection parameters: trained once
    c = methods.create("sparsefinder_distance", margin=2.0).fit(train, 0)
    assert not torch.equal(a.w_q_, c.w_q_)
    blocks = [methods.create("sparsefinder_blocks", block_size=s, n_init=1) for s in (2, 4)]
    w2, w4 = (m.fit(train, 0).w_q_ for m in blocks)
    assert not torch.equal(w2, w4)  # block units train their own projector
    # The memo returns exactly what a fresh training gives.
    P.clear_projection_cache()
    fresh = methods.create("sparsefinder_distance", t=0.5).fit(train, 0)
    assert fresh.w_q_ is not b.w_q_ and torch.equal(fresh.w_q_, b.w_q_)
    assert fresh.loss_history_ == b.loss_history_
