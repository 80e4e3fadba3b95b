"""BigBird at token level (b = 1) and in its blocked form (b > 1): pattern, structure, draws."""

from __future__ import annotations

import pytest
import torch

from sparsebench import methods
from sparsebench.bench import graph_metrics
from sparsebench.methods import BlockLayout, RowIndex, valid_pairs
from sparsebench.methods.bigbird import _random_blocks


def qk(B=3, H=2, N=45, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, N, D, generator=g), torch.randn(B, H, N, D, generator=g)


def reference_draw(seed, r, plan, nb, head):
    """The random blocks as first written: one ``(nb, nb)`` score matrix, masked, top-r."""
    g = torch.Generator()
    g.manual_seed(hash((seed, head, nb)) & 0x7FFFFFFF)
    scores = torch.rand(nb, nb, generator=g)
    i = torch.arange(nb).view(-1, 1)
    j = torch.arange(nb).view(1, -1)
    allowed = (i > 0) & (i < nb - 1) & (j > 0) & (j < nb - 1) & ((j - i).abs() > 1)
    if plan and nb > 2 * r + 5:
        allowed &= j <= 2 * r + 3
        allowed &= ~(((i == 1) & (j == 2 * r + 3)) | ((i == 2 * r + 3) & (j == 1)))
    elif plan and nb <= r + 5:
        allowed &= ~(((i == 1) & (j == nb - 2)) | ((i == nb - 2) & (j == 1)))
    vals, idx = torch.where(allowed, scores, -1.0).topk(min(r, nb), dim=-1)
    out = torch.full((nb, r), -1, dtype=torch.long)
    out[:, : min(r, nb)] = torch.where(vals >= 0, idx, -1)
    return out


def reference_dense(shape, lengths, causal, b, r, seed=0, plan=False):
    """The pattern written out pair by pair from the draws: window, globals, random blocks."""
    B, H, N, M = shape
    out = torch.zeros(shape, dtype=torch.bool)
    for s in range(B):
        L = int(lengths[s])
        nb = -(-L // b)
        for h in range(H):
            blocks = torch.zeros(nb, nb, dtype=torch.bool)
            for i in range(nb):
                for j in range(nb):
                    blocks[i, j] = abs(i - j) <= 1 or i in (0, nb - 1) or j in (0, nb - 1)
            if r > 0 and nb > 0:
                for i, row in enumerate(reference_draw(seed, r, plan, nb, h).tolist()):
                    for j in row:
                        if j >= 0:
                            blocks[i, j] = True
            tok = blocks.repeat_interleave(b, 0).repeat_interleave(b, 1)[:L, :L]
            out[s, h, :L, :L] = tok
    return out & valid_pairs(B, N, M, lengths, causal)


@pytest.mark.parametrize("plan", [False, True])
@pytest.mark.parametrize("r", [0, 1, 3])
def test_draws_in_slabs_equal_the_whole_matrix(plan, r):
    for nb in (1, 2, 6, 13, 40):
        want = reference_draw(5, r, plan, nb, 1)
        for rows in (1, 3, 7, None):
            assert torch.equal(_random_blocks.__wrapped__(5, r, plan, nb, 1, rows), want)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("plan", [False, True])
def test_token_level_is_the_pattern_of_the_draws(causal, plan):
    q, k = qk(N=40)
    lengths = torch.tensor([40, 23, 1])
    g = methods.create("bigbird", num_random=2, official_plan=plan, seed=7).predict(
        q, k, lengths=lengths, causal=causal
    )
    assert g.find(RowIndex) and not g.find(BlockLayout)
    want = reference_dense(q.shape[:3] + (40,), lengths, causal, 1, 2, seed=7, plan=plan)
    assert torch.equal(g.to_dense(), want)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("b", [4, 8])
def test_blocked_is_the_pattern_of_the_draws(b, causal):
    q, k = qk(N=45)
    lengths = torch.tensor([45, 30, 5])
    g = methods.create("bigbird", block_size=b, num_random=1, seed=2).predict(
        q, k, lengths=lengths, causal=causal
    )
    (part,) = g.parts
    assert isinstance(part, BlockLayout) and part.block_size == b
    want = reference_dense(q.shape[:3] + (45,), lengths, causal, b, 1, seed=2)
    assert torch.equal(g.to_dense(), want)


@pytest.mark.parametrize("causal", [False, True])
def test_blocked_keeps_whole_blocks_of_valid_pairs(causal):
    b, N = 8, 61
    q, k = qk(N=N)
    lengths = torch.tensor([61, 40, 9])
    dense = (
        methods.create("bigbird", block_size=b, num_random=2)
        .predict(q, k, lengths=lengths, causal=causal)
        .to_dense()
    )
    valid = valid_pairs(3, N, N, lengths, causal).expand_as(dense)
    assert not (dense & ~valid).any(), "no padding or future pair"
    pad = (-N) % b
    padded = torch.nn.functional.pad(dense, (0, pad, 0, pad))
    nb = (N + pad) // b
    touched = padded.view(3, 2, nb, b, nb, b).any(-1).any(-2)  # (B, H, nb, nb)
    whole = touched.repeat_interleave(b, -2).repeat_interleave(b, -1)[..., :N, :N]
    assert torch.equal(dense, whole & valid), "a kept pair keeps its whole b x b block"


def test_block_density_matches_sparsity_where_tokens_do_not():
    # One long sequence, 4 heads: the share of b x b kernel blocks kept is the share of pairs
    # kept for the blocked form; token-level random keys touch most kernel blocks.
    b, N = 32, 2048
    q, k = qk(B=1, H=4, N=N, D=4)
    blocked = methods.create("bigbird", block_size=b).predict(q, k)
    m = graph_metrics(blocked, blocked, block_size=b)
    assert m["sparsity"] > 0.8
    assert m["block_sparsity"] == pytest.approx(m["sparsity"], abs=1e-6)
    lengths = torch.tensor([N - 5])  # a last block partly padding: still within 1%
    m = graph_metrics(*[blocked.with_validity(lengths=lengths)] * 2, block_size=b)
    assert m["block_sparsity"] == pytest.approx(m["sparsity"], abs=0.01)
    token = methods.create("bigbird").predict(q, k)
    t = graph_metrics(token, token, block_size=b)
    assert t["sparsity"] > 0.99 and t["block_sparsity"] < 0.5


def test_blocked_draws_are_reproducible_and_seeded():
    q, k = qk(N=64)
    lengths = torch.tensor([64, 64, 40])

    def dense(seed, order=(0, 1, 2)):
        idx = torch.tensor(order)
        m = methods.create("bigbird", block_size=4, num_random=2, seed=seed)
        return m.predict(q[idx], k[idx], lengths=lengths[idx]).to_dense()

    assert torch.equal(dense(3), dense(3))
    assert not torch.equal(dense(3), dense(4))
    # A sequence's pattern depends on its length and the seed only, not on the batch order.
    assert torch.equal(dense(3, (2, 0, 1))[0], dense(3)[2])
    # Sequences of equal length share the draw; heads draw apart.
    d = dense(3)
    assert torch.equal(d[0], d[1]) and not torch.equal(d[0, 0], d[0, 1])


def test_grid_sweeps_the_blocked_variant():
    cls = methods.get("bigbird")
    for setting in ("paper", "paper_mlm", "quick"):
        sizes = cls.grid[setting]["block_size"]
        assert 1 in sizes and any(b > 1 for b in sizes), setting
        for b in sizes:
            assert methods.create("bigbird", block_size=b).block_size == b
