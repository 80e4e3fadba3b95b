"""The paper's bucket count and the official-code switches, on hand-worked inputs."""

from __future__ import annotations

import pytest
import torch

from sparsebench import methods
from sparsebench.bench.runs.runner import expand_grid
from sparsebench.methods import Groups, RowIndex
from sparsebench.methods._learned import LearnedProjection
from sparsebench.methods.sparsefinder import SparsefinderQuantize, count_to_size
from sparsebench.methods.sparsefinder_kmeans import SparsefinderKMeans, forced_diagonal

# -- sparsefinder_quantize: buckets per coordinate (β) ---------------------------------------


def _identity_quantize(**params) -> SparsefinderQuantize:
    """d = r = 1 and an identity projection, so the projected values are the inputs."""
    m = SparsefinderQuantize(proj_dim=1, **params)
    m.w_q_ = m.w_k_ = torch.ones(1, 1, 1)
    m.b_q_ = m.b_k_ = torch.zeros(1, 1)
    return m


def _bucket_ids(m: SparsefinderQuantize, x: torch.Tensor, lengths=None) -> torch.Tensor:
    g = m.predict(x, x, lengths=lengths)
    return g.find(Groups)[0].q_groups[..., 0]  # (B, H, N)


def test_beta_ten_tokens_two_buckets_gives_bins_of_five():
    # n = 10, β = 2: bins of ⌈10/2⌉ = 5 tokens. Values in scrambled order; the fixed buckets
    # follow the ranks: the 5 smallest values in bucket 0, the 5 largest in bucket 1.
    assert count_to_size(None, 1, 10, 2).tolist() == [5]
    v = torch.tensor([0.9, -0.3, 0.5, -0.8, 0.1, -0.1, 0.7, -0.6, 0.3, -0.9])
    x = v.view(1, 1, 10, 1)
    ids = _bucket_ids(_identity_quantize(num_buckets=2), x)[0, 0]
    assert ids.tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    # Dynamic: ⌈10/5⌉ = 2 equal-width bins of tanh(x) over (-1, 1), cut at 0.
    dyn = _bucket_ids(_identity_quantize(num_buckets=2, mode="dynamic"), x)[0, 0]
    assert dyn.tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    # β = 3 gives bins of ⌈10/3⌉ = 4 tokens: 4, 4 and 2.
    three = _bucket_ids(_identity_quantize(num_buckets=3), x)[0, 0]
    assert torch.bincount(three).tolist() == [4, 4, 2]


def test_beta_uses_each_sequence_length_unless_padded_length():
    # Lengths 10 and 6 in a batch padded to 10, β = 2: bins of 5 and of 3 tokens.
    x = torch.arange(10.0).view(1, 1, 10, 1).repeat(2, 1, 1, 1)
    lengths = torch.tensor([10, 6])
    ids = _bucket_ids(_identity_quantize(num_buckets=2), x, lengths)
    assert ids[0, 0].tolist() == [0] * 5 + [1] * 5
    assert ids[1, 0].tolist() == [0, 0, 0, 1, 1, 1] + [-1] * 4
    # The official padded length (B8): bins of ⌈10/2⌉ = 5 for the short sequence too.
    padded = _bucket_ids(_identity_quantize(num_buckets=2, official_padded_length=True), x, lengths)
    assert padded[1, 0].tolist() == [0] * 5 + [1] + [-1] * 4
    # One sequence: num_buckets=β is the bucket-size form with S = ⌈n/β⌉.
    y = torch.randn(1, 1, 23, 1, generator=torch.Generator().manual_seed(0))
    for beta in (2, 4, 6):
        for mode in ("fixed", "dynamic"):
            a = _identity_quantize(num_buckets=beta, mode=mode).predict(y, y).to_dense()
            size = -(-23 // beta)
            b = _identity_quantize(bucket_size=size, mode=mode).predict(y, y).to_dense()
            assert torch.equal(a, b)


def test_quantize_forms_ids_and_grids():
    # The bucket-size form stays the default: existing method ids do not change.
    assert methods.create("sparsefinder_quantize").id == "sparsefinder_quantize"
    assert methods.create("sparsefinder_quantize", bucket_size=4).id == (
        "sparsefinder_quantize[bucket_size=4]"
    )
    assert methods.create("sparsefinder_quantize", num_buckets=4).id == (
        "sparsefinder_quantize[num_buckets=4]"
    )
    with pytest.raises(ValueError, match="not both"):
        methods.create("sparsefinder_quantize", bucket_size=4, num_buckets=4)
    with pytest.raises(ValueError, match="num_buckets"):
        methods.create("sparsefinder_quantize", num_buckets=0)
    for causal in (True, False):
        paper = expand_grid("sparsefinder_quantize", "paper", causal)
        assert sorted({p["num_buckets"] for p in paper}) == list(range(2, 21, 2))
        assert all("bucket_size" not in p for p in paper)
    script = expand_grid("sparsefinder_quantize", "official_script", True)
    assert sorted({p["bucket_size"] for p in script}) == [4, 8, 12, 16, 20]
    mlm = expand_grid("sparsefinder_quantize", "official_script_mlm", False)
    assert sorted({p["bucket_size"] for p in mlm}) == [4, 6, 8, 10, 12]


# -- sparsefinder_kmeans: the accidental diagonal (B4) ---------------------------------------


def _toy_kmeans(centroids, **params) -> SparsefinderKMeans:
    """d = r = 1, identity projection, fixed centroids on a line (one run)."""
    c = torch.tensor(centroids, dtype=torch.float).view(1, 1, -1, 1)
    params = {"top_clusters": 2, **params}
    m = SparsefinderKMeans(proj_dim=1, num_clusters=c.shape[2], **params)
    m.w_q_ = m.w_k_ = torch.ones(1, 1, 1)
    m.b_q_ = m.b_k_ = torch.zeros(1, 1)
    m.centroids_ = c
    return m


def _dense(m, q, k):
    return m.predict(q.view(1, 1, -1, 1), k.view(1, 1, -1, 1)).to_dense()[0, 0]


def test_forced_diagonal_only_where_a_cluster_is_in_neither_top_set():
    # C = 4, top-2. Position 0: q = 0.4 -> {0, 1}, k = 10.4 -> {2, 3}: disjoint and covering
    # all four clusters, so no shared non-member id and (0, 0) is NOT added.
    # Position 1: q = 0.45 -> {0, 1}, k = 0.3 -> {0, 1}: clusters 2, 3 lie in neither, so
    # (1, 1) is added (it is an edge anyway: the sets intersect).
    four = [0.0, 1.0, 10.0, 11.0]
    q, k = torch.tensor([0.4, 0.45]), torch.tensor([10.4, 0.3])
    plain = _dense(_toy_kmeans(four), q, k)
    forced = _dense(_toy_kmeans(four, official_forced_diagonal=True), q, k)
    assert plain.tolist() == [[False, True], [False, True]]
    assert torch.equal(forced, plain)
    # C = 5 (one more centroid at 20): the same position 0 now has cluster 4 in neither set,
    # so (0, 0) is added although q's and k's sets are disjoint.
    five = [0.0, 1.0, 10.0, 11.0, 20.0]
    plain5 = _dense(_toy_kmeans(five), q, k)
    forced5 = _dense(_toy_kmeans(five, official_forced_diagonal=True), q, k)
    assert not plain5[0, 0] and forced5[0, 0]
    assert torch.equal(forced5, plain5 | torch.eye(2, dtype=torch.bool))
    # Per-rank semantics: q = 0.4 ranks (0, 1), k = 0.6 ranks (1, 0): no rank agrees, so no
    # edge; with the switch clusters 2 and 3 are in neither set and (0, 0) is added.
    q1, k1 = torch.tensor([0.4]), torch.tensor([0.6])
    assert not _dense(_toy_kmeans(four, topk_semantics="per_rank"), q1, k1)[0, 0]
    rank = _toy_kmeans(four, topk_semantics="per_rank", official_forced_diagonal=True)
    assert _dense(rank, q1, k1)[0, 0]
    # One cluster per vector: the official path adds nothing.
    one = _toy_kmeans(five, top_clusters=1, official_forced_diagonal=True)
    assert not _dense(one, q, k)[0, 0]


def test_forced_diagonal_rule_in_any_run():
    # Two runs of C = 3, top-2: run 0 puts q in {0, 1} and k in {1, 2} (every cluster in some
    # set); run 1 puts both in {0, 1} (cluster 2 in neither): the diagonal comes from run 1.
    q_top = torch.tensor([[0, 1], [0, 1]]).view(1, 1, 1, 2, 2)
    k_top = torch.tensor([[1, 2], [1, 0]]).view(1, 1, 1, 2, 2)
    assert forced_diagonal(q_top, k_top, 3).flatten().tolist() == [0]
    assert forced_diagonal(q_top[:, :, :, :1], k_top[:, :, :, :1], 3).flatten().tolist() == [-1]
    # Key lists per row: row i lists i or nothing.
    part = _toy_kmeans([0.0, 1.0, 10.0, 11.0, 20.0], official_forced_diagonal=True)
    g = part.predict(torch.zeros(1, 1, 3, 1), torch.full((1, 1, 3, 1), 10.5))
    assert g.find(RowIndex)[0].index.flatten().tolist() == [0, 1, 2]


# -- BigBird: the official plan's row routine ------------------------------------------------


def _random_keys(num_random: int, n: int, official_plan: bool, seeds=range(200)):
    """Row -> set of random keys drawn over many seeds (token level, one head)."""
    out: dict[int, set[int]] = {}
    q = torch.zeros(1, 1, n, 2)
    for seed in seeds:
        m = methods.create("bigbird", num_random=num_random, official_plan=official_plan, seed=seed)
        index = m.predict(q, q).find(RowIndex)[0].index[0, 0]
        for i in range(n):
            out.setdefault(i, set()).update(j for j in index[i].tolist() if j >= 0)
    return out


def test_bigbird_plan_forbids_block_to_end_minus_two_to_row_one():
    # r = 2, n = 30 > 2r + 5 = 9: the first plan segment is [0, 9); random keys in 1..7 minus
    # the window. Row 1 may not take 2r + 3 = 7 and row 7 may not take 1:
    #   row 1: {1..7} - {0, 1, 2} - {7} = {3, 4, 5, 6}
    #   row 7: {1..7} - {6, 7, 8} - {1} = {2, 3, 4, 5}
    #   row 4: {1..7} - {3, 4, 5}       = {1, 2, 6, 7} (no extra rule)
    keys = _random_keys(2, 30, True)
    assert keys[1] == {3, 4, 5, 6}
    assert keys[7] == {2, 3, 4, 5}
    assert keys[4] == {1, 2, 6, 7}
    assert keys[20] == {1, 2, 3, 4, 5, 6, 7}
    assert keys[0] == set() and keys[29] == set()
    # Without the plan, row 1 draws from the whole sequence, 7 included.
    free = _random_keys(2, 30, False, seeds=range(60))
    assert 7 in free[1] and max(free[1]) > 7


def test_bigbird_plan_single_segment_short_sequence():
    # r = 2, n = 7 <= r + 5: one plan segment [0, 7), to_end - 2 = 5.
    #   row 1: {1..5} - {0, 1, 2} - {5} = {3, 4}: both taken (r = 2)
    #   row 5: {1..5} - {4, 5, 6} - {1} = {2, 3}: both taken
    q = torch.zeros(1, 1, 7, 2)
    index = methods.create("bigbird", num_random=2, official_plan=True).predict(q, q)
    rows = index.find(RowIndex)[0].index[0, 0]
    assert sorted(rows[1].tolist()) == [3, 4]
    assert sorted(rows[5].tolist()) == [2, 3]
    # Without the switch row 1 may also take 5.
    assert 5 in _random_keys(2, 7, False, seeds=range(40))[1]


# -- Routing: padding competes for the top-w slots --------------------------------------------


def _routing(official: bool, space: str = "raw") -> methods.Method:
    """Routing with two fixed unit centroids c0 = (1, 0) and c1 = (0, 1) (one head)."""
    m = methods.create(
        "routing_trained", num_clusters=2, official_padded_length=official, space=space
    )
    m.centroids_ = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    return m


def test_routing_padding_competes_under_the_switch():
    # Length 3 padded to 5, C = 2. Normalised similarities to (c0, c1):
    #   t0 = (1, -0.1): (0.995, -0.0995); t1 = (-0.1, 1): (-0.0995, 0.995);
    #   t2 = (-1, -1): (-0.707, -0.707); padding holds zeros: (0, 0).
    # Official: w = 5 // 2 + 1 = 3. Cluster 0 takes t0 and the two padding positions, cluster 1
    # takes t1 and the two padding positions: t2 is left without a cluster.
    # Default: w = 3 // 2 + 1 = 2 among real tokens only: both clusters take t0 and t1, which
    # keep cluster 0; t2 is left out as well.
    # Without competing padding, w = 3 would take t0, t1, t2 into cluster 0.
    real = torch.tensor([[1.0, -0.1], [-0.1, 1.0], [-1.0, -1.0]])
    x = torch.cat([real, torch.full((2, 2), 7.0)]).view(1, 1, 5, 2)  # garbage in the padding
    lengths = torch.tensor([3])
    g = _routing(True).predict(x, x, lengths=lengths)
    assert g.find(Groups)[0].q_groups.flatten().tolist() == [0, 1, -1, -1, -1]
    assert g.to_dense()[0, 0, :3, :3].tolist() == [
        [True, False, False],
        [False, True, False],
        [False, False, False],
    ]
    d = _routing(False).predict(x, x, lengths=lengths)
    assert d.find(Groups)[0].q_groups.flatten().tolist() == [0, 0, -1, -1, -1]
    # No padding: the switch changes nothing.
    y = real.view(1, 1, 3, 2)
    assert torch.equal(
        _routing(True).predict(y, y).to_dense(), _routing(False).predict(y, y).to_dense()
    )


def test_routing_projected_padding_is_the_bias():
    # Projected space with W = I and bias (1, 0): padding (zeros) projects to (1, 0), which
    # is cluster 0's own direction. Length 3 padded to 6: w = 6 // 2 + 1 = 4.
    #   t0 = (0, 1)    -> (1, 1):    (0.707, 0.707)
    #   t1 = (-1, 2)   -> (0, 2):    (0, 1)
    #   t2 = (0, -0.5) -> (1, -0.5): (0.894, -0.447)
    #   pad            -> (1, 0):    (1, 0)
    # Cluster 0: the 3 padding positions (1.0) and t2 (0.894) fill its 4 slots, so t0 (0.707)
    # is not taken there; cluster 1 takes t1 (1.0), t0 (0.707) and two padding positions.
    # Hence t0 -> 1, t1 -> 1, t2 -> 0. With padding out (w = 2), cluster 0 takes t2 and t0.
    m = _routing(True, space="projected")
    proj = LearnedProjection(proj_dim=2)
    proj.w_q_ = proj.w_k_ = torch.eye(2).view(1, 2, 2)
    proj.b_q_ = proj.b_k_ = torch.tensor([[1.0, 0.0]])
    m.projector_ = proj
    real = torch.tensor([[0.0, 1.0], [-1.0, 2.0], [0.0, -0.5]])
    x = torch.cat([real, torch.full((3, 2), -3.0)]).view(1, 1, 6, 2)
    lengths = torch.tensor([3])
    ids = m.predict(x, x, lengths=lengths).find(Groups)[0].q_groups.flatten()
    assert ids.tolist() == [1, 1, 0, -1, -1, -1]
    default = _routing(False, space="projected")
    default.projector_ = proj
    ids0 = default.predict(x, x, lengths=lengths).find(Groups)[0].q_groups.flatten()
    assert ids0.tolist() == [0, 1, 0, -1, -1, -1]
