"""The O(N²) predictors score a slab of query rows at a time and predict what one pass did.

Each reference below is the unslabbed computation these predictors made before they worked in
slabs (the whole ``(B, H, N, M)`` score matrix at once). Predictions must equal it bit for bit
for every slab size, padded and causal, with slabs that do not divide ``N``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from sparsebench import methods
from sparsebench.methods import DenseMask, RowIndex, dsa
from sparsebench.methods._learned import sq_dists
from sparsebench.methods._masks import real_tokens, valid_pairs
from sparsebench.methods.dsa import achlioptas_matrix, quantize, score_slabs, threshold_mask
from sparsebench.methods.gold import attention_logits

B, H, N, D = 3, 2, 100, 16
#: Slab rows to force (``None``: the default budget, one slab at this size). 16, 32 and 48 do
#: not divide N = 100.
ROWS = [None, 16, 32, 48]
LENGTHS = {"full": None, "padded": torch.tensor([100, 61, 0])}


def randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def force_rows(monkeypatch, rows: int | None, shape) -> None:
    """Shrink the score budget so slabs hold ``rows`` query rows of ``shape``."""
    if rows is not None:
        Bs, Hs, _, Ms = shape
        monkeypatch.setattr(dsa, "_SLAB_SCORES", rows * Bs * Hs * Ms)


def only_part(graph, kind):
    assert len(graph.parts) == 1 and isinstance(graph.parts[0], kind), graph
    return graph.parts[0]


# -- the references: each predictor's whole-matrix computation ----------------------------


def ref_top_density(scores: Tensor, valid: Tensor, density: float) -> Tensor:
    per_row = torch.ceil(density * valid.sum(-1).double() - 1e-9).long()
    width = max(1, int(per_row.max())) if per_row.numel() else 1
    width = min(width, scores.shape[-1])
    _, idx = scores.topk(width, dim=-1)
    keep = torch.arange(width).view(1, 1, 1, -1) < per_row.unsqueeze(-1)
    return torch.where(keep, idx, -1)


def ref_threshold_mask(scores: Tensor, valid: Tensor, density: float) -> Tensor:
    Bs, Hs, Ns, Ms = scores.shape
    flat = scores.reshape(Bs, Hs, Ns * Ms)
    count = torch.ceil(density * valid.reshape(Bs, -1).sum(-1).double() - 1e-9).long()
    width = max(1, int(count.max()))
    vals, _ = flat.topk(min(width, Ns * Ms), dim=-1)
    cut = vals.gather(-1, (count.view(Bs, 1, 1) - 1).clamp(min=0).expand(Bs, Hs, 1))
    mask = (scores >= cut.unsqueeze(-1)) & valid
    return mask & (count.view(Bs, 1, 1, 1) > 0)


def ref_dsa(m, q, k, lengths, causal) -> Tensor:
    Bs, Hs, Ns, d = q.shape
    Ms = k.shape[2]
    r = max(1, round(m.sigma * d))
    p = torch.stack([achlioptas_matrix(d, r, m._generator(h)) for h in range(Hs)])
    qp = torch.einsum("bhnd,hdr->bhnr", q.float(), p)
    kp = torch.einsum("bhmd,hdr->bhmr", k.float(), p)
    q_real = real_tokens(lengths, Bs, Ns).view(Bs, 1, Ns, 1)
    k_real = real_tokens(lengths, Bs, Ms).view(Bs, 1, Ms, 1)
    qp = quantize(torch.where(q_real, qp, 0.0), m.bits, q_real)
    kp = quantize(torch.where(k_real, kp, 0.0), m.bits, k_real)
    s = qp @ kp.transpose(-1, -2)
    valid = valid_pairs(Bs, Ns, Ms, lengths, causal).expand(Bs, 1, Ns, Ms)
    s = torch.where(valid, s, float("-inf"))
    if m.select == "threshold":
        return ref_threshold_mask(s, valid, m.density)
    return ref_top_density(s, valid, m.density)


def ref_topk_oracle(m, q, k, lengths, causal) -> Tensor:
    Bs, Hs, Ns, _ = q.shape
    Ms = k.shape[2]
    valid = valid_pairs(Bs, Ns, Ms, lengths, causal).expand(Bs, 1, Ns, Ms)
    scores = torch.where(valid, attention_logits(q.float(), k.float()), float("-inf"))
    if m.density is not None:
        return ref_top_density(scores, valid, m.density)
    width = max(1, min(m.k, Ms))
    _, idx = scores.topk(width, dim=-1)
    keep = (torch.arange(width) < m.k).view(1, 1, 1, -1) & valid.expand_as(scores).gather(-1, idx)
    return torch.where(keep, idx, -1)


def ref_distance(m, q, k) -> Tensor:
    qp, kp = m._project(q, "q"), m._project(k, "k")
    if m.dist == "cos":
        qn = torch.nn.functional.normalize(qp, dim=-1)
        kn = torch.nn.functional.normalize(kp, dim=-1)
        d = 1 - qn @ kn.transpose(-1, -2)
    else:
        d = sq_dists(qp, kp)
        if m.dist == "euclidean":
            d = d.sqrt()
    return d < m.t


# -- the slabs ---------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [16, 32, 48, 96, 112])
@pytest.mark.parametrize("n", [1, 15, 16, 100, 113])
def test_score_slabs_cover_the_rows_in_aligned_slabs(monkeypatch, rows, n):
    shape = (2, 3, n, 50)
    force_rows(monkeypatch, rows, shape)
    slabs = score_slabs(shape)
    assert slabs[0][0] == 0 and slabs[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(slabs, slabs[1:], strict=False))
    assert all(s % 16 == 0 for s, _ in slabs)
    # Every slab has the set rows but the last, which takes what is left (fewer only if alone).
    assert all(e - s == rows for s, e in slabs[:-1])
    assert len(slabs) == 1 or rows <= slabs[-1][1] - slabs[-1][0] < 2 * rows


@pytest.mark.parametrize("rows", [16, 32, 48])
@pytest.mark.parametrize(
    "shape", [(3, 2, 100, 100, 4), (1, 8, 257, 257, 16), (2, 4, 129, 70, 64), (1, 1, 301, 900, 8)]
)
def test_slab_products_are_bitwise_the_whole_product(monkeypatch, rows, shape):
    """What the bit-identical predictions rest on: a slab's rows of ``a @ bᵀ`` are those of
    the product over all rows (slabs of one to three rows would differ in the last bits)."""
    Bs, Hs, n, m, r = shape
    a, b = randn(Bs, Hs, n, r, seed=20), randn(Bs, Hs, m, r, seed=21)
    force_rows(monkeypatch, rows, (Bs, Hs, n, m))
    slabs = [a[:, :, s:e] @ b.transpose(-1, -2) for s, e in score_slabs((Bs, Hs, n, m))]
    assert len(slabs) > 1 and torch.equal(torch.cat(slabs, 2), a @ b.transpose(-1, -2))


def test_score_slabs_stay_near_the_budget_at_long_lengths():
    Bs, Hs, n = 1, 8, 16384
    slabs = score_slabs((Bs, Hs, n, n))
    widest = max(e - s for s, e in slabs)
    assert widest * Bs * Hs * n <= 2 * dsa._SLAB_SCORES and len(slabs) > 1


# -- DSA ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize(
    "params",
    [{}, {"bits": 1, "density": 0.3}, {"bits": None, "density": 0.05}, {"density": 1.0}],
    ids=["default", "sign", "float", "all"],
)
def test_dsa_topk_equals_the_whole_matrix(monkeypatch, rows, lengths, causal, params):
    q, k = randn(B, H, N, D, seed=1), randn(B, H, N, D, seed=2)
    force_rows(monkeypatch, rows, (B, H, N, N))
    m = methods.create("dsa", **params)
    part = only_part(m.predict(q, k, lengths=lengths, causal=causal), RowIndex)
    ref = ref_dsa(m, q, k, lengths, causal)
    assert part.index.shape == ref.shape and torch.equal(part.index, ref)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("bits", [1, 2, None])
def test_dsa_threshold_equals_the_whole_matrix(monkeypatch, rows, lengths, causal, bits):
    """One cut per sequence and head, found by radix selection: the same as a global top-k,
    ties included (one- and two-bit scores tie a lot)."""
    q, k = randn(B, H, N, D, seed=3), randn(B, H, N, D, seed=4)
    force_rows(monkeypatch, rows, (B, H, N, N))
    m = methods.create("dsa", select="threshold", bits=bits, density=0.15)
    part = only_part(m.predict(q, k, lengths=lengths, causal=causal), DenseMask)
    assert torch.equal(part.mask, ref_dsa(m, q, k, lengths, causal))


@pytest.mark.parametrize("rows", [None, 16])
def test_dsa_cross_attention_with_more_queries_than_keys(monkeypatch, rows):
    q, k = randn(B, H, N, D, seed=5), randn(B, H, 70, D, seed=6)
    force_rows(monkeypatch, rows, (B, H, N, 70))
    for select in ("topk", "threshold"):
        m = methods.create("dsa", select=select)
        part = m.predict(q, k).parts[0]
        got = part.index if select == "topk" else part.mask
        assert torch.equal(got, ref_dsa(m, q, k, None, False)), select


@pytest.mark.parametrize("heads", [2, 9], ids=["16-bit digits", "11-bit digits"])
def test_threshold_cut_handles_signed_zeros_extremes_and_ties(heads):
    """Scores with -0.0 and +0.0, large magnitudes, repeated values and masked pairs; up to 16
    sequences and heads the cut is found in 16-bit digits, above in 11-bit ones."""
    values = torch.tensor([0.0, -0.0, -1.5, 3e38, -3e38, 2.0, 2.0, 1e-30, -1e-30, 7.0])
    g = torch.Generator().manual_seed(7)
    s = values[torch.randint(len(values), (2, heads, 40, 40), generator=g)]
    lengths = torch.tensor([40, 23])
    valid = valid_pairs(2, 40, 40, lengths, True).expand(2, 1, 40, 40)
    masked = torch.where(valid, s, float("-inf"))
    for density in (0.0, 0.01, 0.2, 0.5, 0.9, 1.0):
        got = threshold_mask(
            lambda a, b: s[:, :, a:b].clone(),
            s.shape,
            density,
            lengths=lengths,
            causal=True,
            device=s.device,
        )
        assert torch.equal(got, ref_threshold_mask(masked, valid, density)), density


# -- the reference rows ------------------------------------------------------------------


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("params", [{}, {"k": 1}, {"k": 80}, {"density": 0.1}])
def test_topk_oracle_equals_the_whole_matrix(monkeypatch, rows, lengths, causal, params):
    q, k = randn(B, H, N, D, seed=8), randn(B, H, N, D, seed=9)
    force_rows(monkeypatch, rows, (B, H, N, N))
    m = methods.create("topk_oracle", **params)
    part = only_part(m.predict(q, k, lengths=lengths, causal=causal), RowIndex)
    ref = ref_topk_oracle(m, q, k, lengths, causal)
    assert part.index.shape == ref.shape and torch.equal(part.index, ref)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("seed", [0, 5])
def test_random_draws_are_those_of_one_rand_call(monkeypatch, rows, seed):
    """The same generator values in the same order as ``torch.rand(B, H, N, M)``."""
    q, k = randn(B, H, N, D, seed=10), randn(B, H, 90, D, seed=11)
    force_rows(monkeypatch, rows, (1, 1, N, 90))
    m = methods.create("random", density=0.3, seed=seed)
    part = only_part(m.predict(q, k), DenseMask)
    ref = torch.rand(B, H, N, 90, generator=m._generator(0)) < m.density
    assert torch.equal(part.mask, ref)


# -- Sparsefinder --------------------------------------------------------------------------


def distance_method(dist: str, t: float):
    """A distance predictor with seeded projections in place of trained ones (r = 4)."""
    m = methods.create("sparsefinder_distance", dist=dist, t=t)
    m.w_q_, m.b_q_ = randn(H, D, 4, seed=12) / math.sqrt(D), randn(H, 4, seed=13)
    m.w_k_, m.b_k_ = randn(H, D, 4, seed=14) / math.sqrt(D), randn(H, 4, seed=15)
    return m


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("dist,t", [("l2", 2.0), ("euclidean", 1.5), ("cos", 0.4)])
def test_sparsefinder_distance_equals_the_whole_matrix(monkeypatch, rows, lengths, dist, t):
    q, k = randn(B, H, N, D, seed=16), randn(B, H, N, D, seed=17)
    force_rows(monkeypatch, rows, (B, H, N, N))
    m = distance_method(dist, t)
    part = only_part(m.predict(q, k, lengths=lengths, causal=True), DenseMask)
    ref = ref_distance(m, q, k)
    assert 0 < int(ref.sum()) < ref.numel()  # a threshold that keeps some pairs, not all
    assert torch.equal(part.mask, ref)
