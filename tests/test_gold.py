"""The gold graph equals the entmax package's support, on random and adversarial inputs."""

from __future__ import annotations

import pytest
import torch
from entmax import entmax15, entmax_bisect
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsebench.bench import attention_logits, gold_graph
from sparsebench.methods.gold import entmax15_support, gold_rows

from .conftest import dense_valid


def reference_support(q, k, lengths=None, causal=False, alpha=1.5):
    z = attention_logits(q, k)
    B, _, N, _ = z.shape
    valid = dense_valid(B, N, lengths, causal)
    z = z.masked_fill(~valid, float("-inf"))
    rows_ok = valid.any(-1, keepdim=True)
    z = torch.where(rows_ok, z, 0.0)
    p = entmax15(z, dim=-1) if alpha == 1.5 else entmax_bisect(z, alpha=alpha, dim=-1)
    return (p > 0) & valid & rows_ok


def make(seed, B=2, H=3, N=37, D=8, scale=1.0, integer=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, N, D, generator=g) * scale
    k = torch.randn(B, H, N, D, generator=g) * scale
    if integer:  # many exact ties in the logits
        q, k = q.round(), k.round()
    return q, k


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_matches_entmax15_random(seed, causal):
    q, k = make(seed, scale=0.5 + seed)
    lengths = torch.tensor([37, 5 + 4 * seed])
    got = gold_graph(q, k, lengths=lengths, causal=causal).to_dense()
    assert torch.equal(got, reference_support(q, k, lengths, causal))


@pytest.mark.parametrize("causal", [False, True])
def test_matches_entmax15_with_ties(causal):
    q, k = make(7, N=50, scale=1.5, integer=True)
    got = gold_graph(q, k, causal=causal).to_dense()
    assert torch.equal(got, reference_support(q, k, None, causal))


def test_all_equal_logits_give_full_rows():
    q = torch.zeros(1, 2, 20, 4)
    k = torch.zeros(1, 2, 20, 4)
    g = gold_graph(q, k, lengths=torch.tensor([13]))
    dense = g.to_dense()
    assert dense[0, :, :13, :13].all()
    assert not dense[0, :, 13:].any() and not dense[0, :, :, 13:].any()


def test_one_valid_key_and_fully_padded_rows():
    q, k = make(3, B=3, N=9)
    g = gold_graph(q, k, lengths=torch.tensor([1, 0, 9]))
    dense = g.to_dense()
    assert dense[0, :, 0, 0].all() and dense[0].sum() == 3  # one key, one edge per head
    assert dense[1].sum() == 0  # fully padded sequence: no edges
    causal = gold_graph(q, k, causal=True).to_dense()
    assert causal[:, :, 0, 0].all() and causal[:, :, 0, 1:].sum() == 0


def test_slabs_and_fallback_do_not_change_the_result():
    q, k = make(11, N=64, scale=0.2)  # flat rows: supports far wider than the first guess
    a, _ = gold_rows(q, k, rows_per_slab=5)
    b, _ = gold_rows(q, k)
    assert torch.equal(a, b)
    assert a.shape[-1] > 32
    ref = reference_support(q, k)
    dense = gold_graph(q, k).to_dense()
    assert torch.equal(dense, ref)


def test_support_of_logits_directly_matches_entmax15():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 300, generator=g) * 3
    z[::7, 5:40] = 1.25  # tied blocks
    z[3, :] = 0.0
    z[4, 100:] = float("-inf")
    idx, keep, probs = entmax15_support(z, k=4, with_probs=True)
    spare = torch.where(idx < 0, z.shape[1], idx)  # -1 pads a row: send it to a spare column
    dense = torch.zeros(50, 301, dtype=torch.bool).scatter_(1, spare, keep)[:, :300]
    p = entmax15(z, dim=-1)
    assert torch.equal(dense, p > 0)
    got = torch.zeros(50, 301).scatter_(1, spare, torch.where(keep, probs, 0.0))[:, :300]
    assert torch.equal(got, p)


@pytest.mark.parametrize("alpha", [1.25, 2.0])
def test_other_alpha_matches_bisect(alpha):
    q, k = make(5, N=30, scale=2)
    lengths = torch.tensor([30, 17])
    for causal in (False, True):
        got = gold_graph(q, k, alpha=alpha, lengths=lengths, causal=causal).to_dense()
        assert torch.equal(got, reference_support(q, k, lengths, causal, alpha))


def test_probs_are_the_entmax_probabilities():
    q, k = make(2, N=25)
    g = gold_graph(q, k, with_probs=True)
    part = g.parts[0]
    dense_p = part.slab_weights(0, 25, g.shape)
    ref = entmax15(attention_logits(q, k), dim=-1)
    assert torch.allclose(dense_p, ref, atol=0, rtol=0)


def test_bad_inputs_raise_clear_errors():
    q, k = make(0)
    with pytest.raises(ValueError, match="NaN or inf"):
        gold_graph(q.clone().fill_(float("nan")), k)
    with pytest.raises(ValueError, match=r"\(B, H, N, D\)"):
        gold_graph(q[0], k[0])
    with pytest.raises(ValueError, match="alpha"):
        gold_graph(q, k, alpha=1.0)
    with pytest.raises(ValueError, match="lengths"):
        gold_graph(q, k, lengths=torch.tensor([1, 99]))
    with pytest.raises(ValueError, match="empty batch"):
        gold_graph(q[:0], k[:0])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 24),
    scale=st.floats(0.05, 20),
    integer=st.booleans(),
    causal=st.booleans(),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_property_equals_entmax15(n, scale, integer, causal, seed, data):
    q, k = make(seed, B=2, H=2, N=n, D=4, scale=scale, integer=integer)
    lengths = torch.tensor([data.draw(st.integers(0, n)), n])
    got = gold_graph(q, k, lengths=lengths, causal=causal).to_dense()
    assert torch.equal(got, reference_support(q, k, lengths, causal))
