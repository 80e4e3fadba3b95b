"""Sparsefinder's learned low-dimensional projections: init, loss, negatives and k-means.

Private helpers of :mod:`sparsebench.methods.sparsefinder`. Everything is plain torch, runs on
the device of its inputs and draws randomness only from the ``torch.Generator`` it is given.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "gold_mask",
    "hinge_loss",
    "init_projection",
    "kmeans",
    "project",
    "sample_negatives",
    "sq_dists",
    "valid_pairs",
]


def init_projection(
    H: int, d: int, r: int, generator: torch.Generator, *, official: bool = False
) -> tuple[Tensor, Tensor]:
    """Weights ``(H, d, r)`` and bias ``(H, r)`` of one head-wise linear projector.

    The default follows ``nn.Linear`` for a ``d -> r`` map: weight and bias uniform in
    ``±1/sqrt(d)``. ``official=True`` reproduces the reference code: its kaiming init sees the
    ``(H, d, r)`` tensor, so the weight bound is ``1/sqrt(d·r)``, and the bias is ``U(-1, 1)``.
    """
    bound_w = 1 / math.sqrt(d * r) if official else 1 / math.sqrt(d)
    bound_b = 1.0 if official else 1 / math.sqrt(d)
    w = (torch.rand(H, d, r, generator=generator) * 2 - 1) * bound_w
    b = (torch.rand(H, r, generator=generator) * 2 - 1) * bound_b
    return w, b


def project(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Head-wise projection ``x W_h + b_h``: ``(B, H, N, d) -> (B, H, N, r)``."""
    return torch.einsum("bhnd,hdr->bhnr", x, w) + b[None, :, None, :]


def sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``(..., N, M)`` between rows of ``a`` and ``b``."""
    # The expansion keeps memory at N x M (not N x M x r); clamp the rounding below zero.
    d = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)
    return d.clamp(min=0)


def valid_pairs(
    B: int, N: int, M: int, lengths: Tensor | None, causal: bool, device=None
) -> Tensor:
    """Bool ``(B, 1, N, M)``: query and key below the length (and ``j <= i`` if causal)."""
    i = torch.arange(N, device=device).view(1, 1, N, 1)
    j = torch.arange(M, device=device).view(1, 1, 1, M)
    if lengths is None:
        ok = torch.ones(B, 1, N, M, dtype=torch.bool, device=device)
    else:
        L = lengths.to(device).view(B, 1, 1, 1)
        ok = (i < L) & (j < L)
    if causal:
        ok = ok & (j <= i)
    return ok


def gold_mask(
    q: Tensor, k: Tensor, *, lengths: Tensor | None, causal: bool, alpha: float
) -> Tensor:
    """Dense bool gold graph ``(B, H, N, M)`` (support of α-entmax), from ``gold_rows``."""
    from .gold import gold_rows

    index, _ = gold_rows(q, k, alpha=alpha, lengths=lengths, causal=causal)
    B, H, N, _ = index.shape
    M = k.shape[2]
    out = torch.zeros(B, H, N, M + 1, dtype=torch.bool, device=index.device)
    out.scatter_(-1, torch.where(index < 0, M, index), True)
    return out[..., :M]


def sample_negatives(pos: Tensor, allowed: Tensor, generator: torch.Generator) -> Tensor:
    """As many negatives per query as it has positives, uniformly without replacement.

    Args:
        pos: bool ``(B, H, N, M)`` positives (gold keys) of each query.
        allowed: bool, broadcastable to ``pos``: keys that may be drawn (valid, not padding).
        generator: the source of randomness (drawn on the CPU, then moved).

    Returns:
        Bool ``(B, H, N, M)``. A query with fewer candidates than positives gets all of them.
    """
    cand = allowed & ~pos
    need = pos.sum(-1, keepdim=True)  # (B, H, N, 1)
    K = int(need.max()) if pos.numel() else 0
    out = torch.zeros_like(pos)
    if K == 0:
        return out
    scores = torch.rand(pos.shape, generator=generator).to(pos.device)
    scores = scores.masked_fill(~cand, 2.0)  # non-candidates rank after every candidate
    K = min(K, pos.shape[-1])
    vals, idx = torch.topk(scores, K, dim=-1, largest=False)
    rank = torch.arange(K, device=pos.device)
    keep = (rank < need) & (vals < 2.0)
    return out.scatter_(-1, idx, keep)


def hinge_loss(
    qp: Tensor, kp: Tensor, pos: Tensor, neg: Tensor, lengths: Tensor | None, margin: float
) -> Tensor:
    """The Sparsefinder projection loss: one hinge per query on summed squared distances.

    ``ℓ_i = max(0, margin + Σ_{j∈P_i} ‖q'_i − k'_j‖² − Σ_{l∈N_i} ‖q'_i − k'_l‖²)``; padding
    queries give 0; per sequence and head ``Σ_i ℓ_i / L``; then the mean over sequences and heads.

    Args:
        qp: projected queries ``(B, H, N, r)``.
        kp: projected keys ``(B, H, M, r)``.
        pos: bool ``(B, H, N, M)`` positives.
        neg: bool ``(B, H, N, M)`` negatives.
        lengths: ``(B,)`` valid lengths, or ``None`` (all ``N`` valid).
        margin: the hinge margin ω.

    Returns:
        A scalar tensor.
    """
    B, H, N, _ = qp.shape
    D = sq_dists(qp, kp)  # (B, H, N, M)
    zero = D.new_zeros(())
    per_query = torch.relu(
        margin + torch.where(pos, D, zero).sum(-1) - torch.where(neg, D, zero).sum(-1)
    )  # (B, H, N)
    if lengths is None:
        L = torch.full((B,), N, device=qp.device)
    else:
        L = lengths.to(qp.device)
    real = torch.arange(N, device=qp.device).view(1, 1, N) < L.view(B, 1, 1)
    per_seq = torch.where(real, per_query, zero).sum(-1) / L.clamp(min=1).view(B, 1)
    return per_seq.mean()


def kmeans(
    x: Tensor,
    num_clusters: int,
    generator: torch.Generator,
    *,
    init: str = "k-means++",
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> Tensor:
    """Plain Lloyd k-means, batched over heads; keeps the best of ``n_init`` starts by inertia.

    Args:
        x: points ``(H, T, r)`` (one set per head, ``T >= 1``).
        num_clusters: number of centroids ``C``.
        generator: the source of randomness (CPU generator).
        init: ``"k-means++"`` (D² sampling) or ``"random"`` (distinct random points).
        n_init: number of starts per head.
        max_iter: Lloyd iterations at most.
        tol: stop when the squared centroid shift falls below ``tol`` times the mean per-feature
            variance of the points (the scikit-learn rule).

    Returns:
        Centroids ``(H, C, r)``. A cluster that loses all its points keeps its last centroid.
    """
    H0, T, r = x.shape
    C = num_clusters
    # All starts run at once: start s of head h is row s * H0 + h of a batch of n_init * H0.
    x = x.float().repeat(n_init, 1, 1)  # (S*H, T, r)
    H = x.shape[0]
    thresh = tol * x.var(1, unbiased=False).mean(-1)  # (S*H,)
    rows = torch.arange(H, device=x.device)
    if init == "random":
        # Distinct points when there are enough, else with replacement.
        if T >= C:
            pick = torch.rand(H, T, generator=generator).argsort(-1)[:, :C]
        else:
            pick = torch.randint(T, (H, C), generator=generator)
        cent = x[rows[:, None], pick.to(x.device)]  # (S*H, C, r)
    else:
        first = torch.randint(T, (H,), generator=generator).to(x.device)
        cent = x[rows, first].unsqueeze(1)  # (S*H, 1, r)
        closest = sq_dists(x, cent).squeeze(-1)  # (S*H, T)
        for _c in range(1, C):
            w = torch.where(closest.sum(-1, keepdim=True) > 0, closest, torch.ones_like(closest))
            nxt = torch.multinomial(w.cpu(), 1, generator=generator).to(x.device)
            new = x[rows, nxt[:, 0]].unsqueeze(1)
            cent = torch.cat([cent, new], 1)
            closest = torch.minimum(closest, sq_dists(x, new).squeeze(-1))
    for _it in range(max_iter):
        assign = sq_dists(x, cent).argmin(-1)  # (S*H, T)
        counts = x.new_zeros(H, C).scatter_add_(1, assign, x.new_ones(H, T))
        sums = x.new_zeros(H, C, r).scatter_add_(1, assign[..., None].expand(H, T, r), x)
        new = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], cent)
        shift = ((new - cent) ** 2).sum((-1, -2))
        cent = new
        if (shift <= thresh).all():
            break
    inertia = sq_dists(x, cent).min(-1).values.sum(-1).view(n_init, H0)
    best = inertia.argmin(0)  # (H0,)
    return cent.view(n_init, H0, C, r)[best, torch.arange(H0, device=x.device)]
