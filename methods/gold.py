"""The gold graph: the support of α-entmax attention, computed exactly and in row slabs.

For α = 1.5 the support equals that of ``entmax.entmax15`` on the same logits, bit for bit:
the scores of a slab of query rows are computed, the top ``k`` scores of each row are taken
(``torch.topk`` returns them in the order a descending sort does, ties included), and the
threshold is computed on those values with the same arithmetic as the sort-based algorithm of
the entmax package. Rows whose support could be larger than ``k`` are redone with ``2k`` (the
package's own fall-back schedule), up to a full sort. Nothing of size ``N x M`` is ever held:
extra memory is one slab of ``(H, rows, M)`` scores.

For other α the slab rows go through ``entmax.entmax_bisect`` and its support is taken.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import check_alpha, check_normalizer, check_qk, to_scoring
from .graph import Graph
from .parts import DenseMask, RowIndex

__all__ = [
    "Solved",
    "attention_logits",
    "attention_probs",
    "entmax15_probs",
    "entmax15_support",
    "prefix_threshold",
    "entmax15_threshold",
    "gold_graph",
    "gold_rows",
]

# Score slabs are sized to about this many float32 elements (64 MB).
_SLAB_SCORES = 1 << 24


def attention_logits(q: Tensor, k: Tensor) -> Tensor:
    """Logits ``q·k/√d`` exactly as the gold graph computes them: ``(q * d**-0.5) @ kᵀ``."""
    return torch.matmul(q * (q.shape[-1] ** -0.5), k.transpose(-1, -2))


def attention_probs(scores: Tensor, normalizer: str = "entmax", alpha: float = 1.5) -> Tensor:
    """Softmax or α-entmax over the last dim of ``-inf``-masked scores.

    A row with no allowed key gets zeros: a query with nothing to attend to outputs nothing
    (it never falls back to full attention). α = 1.5 uses ``entmax15`` (its ``k`` only bounds
    the first partial sort, with a wider fall-back, so the result is exact); other α bisection.
    The result has the dtype of ``scores`` (callers upcast half-precision scores first).

    Raises:
        ValueError: for an unknown normalizer, or (``"entmax"``) an α that is not finite and > 1.
    """
    check_normalizer(normalizer)
    if normalizer == "entmax":
        alpha = check_alpha(alpha)
    # A row is empty when its largest score is -inf; rows are masked only when there is one.
    empty = scores.amax(-1, keepdim=True) == float("-inf")
    any_empty = bool(empty.any())
    safe = torch.where(empty, 0.0, scores) if any_empty else scores
    if normalizer == "softmax":
        p = torch.softmax(safe, dim=-1)
    elif normalizer == "entmax":
        from entmax import entmax15, entmax_bisect

        if alpha == 1.5 and not (torch.is_grad_enabled() and safe.requires_grad):
            p = entmax15_probs(safe)  # the same values, without autograd's bookkeeping
        elif alpha == 1.5:
            p = entmax15(safe, dim=-1, k=min(64, safe.shape[-1]))
        else:
            p = entmax_bisect(safe, alpha=alpha, dim=-1)
    return torch.where(empty, 0.0, p) if any_empty else p


def prefix_threshold(xs: Tensor) -> tuple[Tensor, Tensor]:
    """Threshold and support size of 1.5-entmax from row values sorted in descending order.

    ``xs`` holds ``(z - max(z)) / 2`` for the leading entries of each row (last dim). The
    arithmetic is that of the sort-based algorithm (Peters et al., 2019): with ``ρ`` the rank,
    ``τ_ρ = mean_ρ - sqrt(max(0, (1 - ρ·(mean_sq_ρ - mean_ρ²)) / ρ))`` and the support size is the
    number of ranks with ``τ_ρ <= x_ρ``. Identical operations on an identical prefix give
    identical bits, so a prefix that holds the support gives the package's exact threshold.
    """
    rho = torch.arange(1, xs.shape[-1] + 1, dtype=xs.dtype, device=xs.device)
    mean = xs.cumsum(-1) / rho
    mean_sq = (xs**2).cumsum(-1) / rho
    ss = rho * (mean_sq - mean**2)
    delta = (1 - ss) / rho
    tau = mean - torch.sqrt(torch.clamp(delta, 0))
    support = (tau <= xs).sum(-1, keepdim=True)
    tau_star = tau.gather(-1, (support - 1).clamp(min=0))
    return tau_star, support


class Solved(NamedTuple):
    """Rows of :func:`entmax15_threshold` settled in one round.

    Attributes:
        rows: ``(r,)`` row ids, or ``None`` for every row.
        index: ``(r, K)`` positions of the ``K`` largest entries, in descending order.
        tau: ``(r, 1)`` the 1.5-entmax threshold of each row.
        probs: ``(r, K)`` the probabilities of those entries (``list_support`` only).
    """

    rows: Tensor | None
    index: Tensor
    tau: Tensor
    probs: Tensor | None


def entmax15_threshold(
    rows: Tensor, k: int = 64, *, from_logits: bool = False, list_support: bool = False
) -> Iterator[Solved]:
    """Solve 1.5-entmax on the top ``k`` entries of each row, widening the prefix where needed.

    The threshold comes from the ``k`` largest entries of a row (``torch.topk``, which orders
    them as a descending sort does, ties included); a row whose support fills its prefix is
    redone with ``2k`` entries, up to a full sort. With the arithmetic of the sort-based
    algorithm, the threshold is the one ``entmax15`` computes over the whole row.

    Args:
        rows: ``(R, M)`` values; ``-inf`` marks excluded entries.
        k: first prefix length.
        from_logits: ``rows`` are logits ``z`` (the prefix becomes ``(z - max z) / 2``);
            otherwise they already hold ``(z - max z) / 2``.
        list_support: a row is settled only when its prefix also lists every entry of positive
            probability (the last entry of the prefix scores zero), and the probabilities of
            the prefix are returned.

    Yields:
        :class:`Solved` rows, round by round; every row is settled exactly once.
    """
    M = rows.shape[-1]
    k = max(1, min(k, M))
    todo: Tensor | None = None  # None: every row
    while True:
        kk = min(k, M)
        sub = rows if todo is None else rows[todo]
        vals, idx = torch.topk(sub, kk, dim=-1) if kk < M else torch.sort(sub, -1, True)
        x = (vals - vals[:, :1]) / 2 if from_logits else vals
        tau, support = prefix_threshold(x)
        if list_support:
            y = torch.clamp(x - tau, min=0) ** 2
            # Solved when the support is shorter than the prefix and the prefix's last value
            # is outside it: every key not listed scores no higher, so none is in the support.
            done = ((support[:, 0] < kk) & (y[:, -1] == 0)) | (kk == M)
        else:
            y = None
            done = (support[:, 0] < kk) | (kk == M)
        if done.all():
            yield Solved(todo, idx, tau, y)
            return
        ids = torch.nonzero(done).squeeze(-1)
        settled = ids if todo is None else todo[ids]
        yield Solved(settled, idx[ids], tau[ids], None if y is None else y[ids])
        rest = torch.nonzero(~done).squeeze(-1)
        todo = rest if todo is None else todo[rest]
        k = kk * 2


def entmax15_probs(z: Tensor, rows: Tensor | None = None, k: int = 64) -> Tensor:
    """``entmax15(z, dim=-1)`` (the same values, bit for bit), from :func:`entmax15_threshold`.

    Args:
        z: ``(..., M)`` logits; ``-inf`` marks excluded keys. Every solved row needs one finite
            entry. ``z`` is not modified.
        rows: indices into the flattened leading dims of the rows to solve; the other rows
            are zero. ``None`` solves every row.
        k: first prefix length (:func:`entmax15_threshold`); it changes the work, not the values.

    Returns:
        Probabilities of the shape and dtype of ``z``.
    """
    M = z.shape[-1]
    flat = z.reshape(-1, M)
    sub = flat if rows is None else flat[rows]
    probs = torch.zeros_like(sub)
    for part in entmax15_threshold(sub, k, from_logits=True, list_support=True):
        if part.rows is None:
            probs.scatter_(-1, part.index, part.probs)
        else:
            probs[part.rows] = probs[part.rows].scatter(-1, part.index, part.probs)
    if rows is not None:
        probs = torch.zeros_like(flat).index_copy_(0, rows, probs)
    return probs.view(z.shape)


def entmax15_support(
    scores: Tensor, k: int = 32, with_probs: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Support of ``entmax15(scores, dim=-1)`` as per-row key lists.

    Args:
        scores: ``(..., M)`` float logits; ``-inf`` marks excluded keys. Every row must have at
            least one finite entry.
        k: first guess of the largest support; rows that need more are redone with ``2k``.
        with_probs: also return the probabilities of the listed keys.

    Returns:
        ``(index, keep, probs)``: ``index`` ``(..., K)`` int64 key positions in descending score
        order, ``keep`` ``(..., K)`` bool (the key is in the support), ``probs`` ``(..., K)`` or
        ``None``.
    """
    M = scores.shape[-1]
    lead = scores.shape[:-1]
    flat = scores.reshape(-1, M)
    rows = flat.shape[0]
    solved = list(entmax15_threshold(flat, k, from_logits=True, list_support=True))
    width = max(s.index.shape[-1] for s in solved)
    index = torch.full((rows, width), -1, dtype=torch.long, device=scores.device)
    keep = torch.zeros(rows, width, dtype=torch.bool, device=scores.device)
    probs = torch.zeros(rows, width, dtype=scores.dtype, device=scores.device)
    for s in solved:
        w = s.index.shape[-1]
        r = slice(None) if s.rows is None else s.rows
        index[r, :w] = s.index
        keep[r, :w] = s.probs > 0
        probs[r, :w] = s.probs
    index = index.view(*lead, width)
    keep = keep.view(*lead, width)
    return index, keep, probs.view(*lead, width) if with_probs else None


def _bisect_support(scores: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    from entmax import entmax_bisect

    p = entmax_bisect(scores, alpha=alpha, dim=-1)
    keep = p > 0
    width = max(1, int(keep.sum(-1).max().item()))
    vals, idx = torch.topk(torch.where(keep, p, -1.0), width, dim=-1)
    return idx, vals > 0, torch.clamp(vals, min=0)


def gold_rows(
    q: Tensor,
    k: Tensor,
    *,
    alpha: float = 1.5,
    lengths: Tensor | None = None,
    causal: bool = False,
    with_probs: bool = False,
    rows_per_slab: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Gold support as a padded key list ``(B, H, N, K)`` (``-1`` pads) and, optionally, probs.

    Arguments as for :func:`gold_graph` (float16 and bfloat16 are scored in float32; the probs
    come in the scoring dtype). Shapes are not checked here: :func:`gold_graph` does that. One
    loop over sequences and row slabs, longer than most functions: the slab's causal and padding
    masks, the solve and the running width of the key list share the loop's state.

    Raises:
        ValueError: for an α that is not finite and > 1.
    """
    alpha = check_alpha(alpha)
    q, k = to_scoring(q), to_scoring(k)
    B, H, N, D = q.shape
    M = k.shape[2]
    exact15 = alpha == 1.5
    lens = (
        torch.full((B,), min(N, M), dtype=torch.long)
        if lengths is None
        else torch.as_tensor(lengths, dtype=torch.long).reshape(-1).cpu()
    )
    scale = D**-0.5
    out: list[list[tuple[int, int, Tensor, Tensor | None]]] = []
    width = 1
    guess = 32
    for b in range(B):
        L = int(lens[b]) if lengths is not None else N
        # Bisection sums whole rows, so it sees every key column (masked) as the reference does.
        Lk = int(lens[b]) if lengths is not None and exact15 else M
        pieces = []
        if L > 0 and Lk > 0:
            qb = q[b, :, :L] * scale  # (H, L, D)
            kb = k[b, :, :Lk].transpose(-1, -2)  # (H, D, Lk)
            rows = rows_per_slab or max(1, _SLAB_SCORES // max(1, H * Lk))
            for s in range(0, L, rows):
                e = min(L, s + rows)
                kend = min(Lk, e) if causal and exact15 else Lk
                scores = torch.matmul(qb[:, s:e], kb[:, :, :kend])  # (H, c, kend)
                if causal and kend > s + 1:
                    future = torch.ones(e - s, kend - s, dtype=torch.bool).triu(1)
                    scores[:, :, s:].masked_fill_(future.to(scores.device), float("-inf"))
                if lengths is not None and Lk > L:
                    scores[..., L:] = float("-inf")
                if exact15:
                    idx, keep, probs = entmax15_support(scores, guess, with_probs)
                    guess = max(8, 1 << int(math.ceil(math.log2(int(keep.sum(-1).max()) + 2))))
                else:
                    idx, keep, probs = _bisect_support(scores, alpha)
                # Listed keys come in descending score order, so each support is a prefix:
                # keep the columns up to the widest support.
                w = max(1, int(keep.sum(-1).max()))
                idx = torch.where(keep, idx, -1)[..., :w]
                probs = probs[..., :w] if with_probs else None
                width = max(width, w)
                pieces.append((s, e, idx, probs))
        out.append(pieces)
    index = torch.full((B, H, N, width), -1, dtype=torch.long, device=q.device)
    probs_all = torch.zeros(B, H, N, width, dtype=q.dtype, device=q.device) if with_probs else None
    for b, pieces in enumerate(out):
        for s, e, idx, pr in pieces:
            index[b, :, s:e, : idx.shape[-1]] = idx
            if probs_all is not None:
                probs_all[b, :, s:e, : idx.shape[-1]] = pr
    return index, probs_all


def gold_graph(
    q: Tensor,
    k: Tensor,
    *,
    alpha: float = 1.5,
    lengths: Tensor | None = None,
    causal: bool = False,
    with_probs: bool = False,
) -> Graph:
    """The gold α-entmax attention graph of one layer.

    Args:
        q: queries ``(B, H, N, D)``, unscaled (logits are ``q·k/√d``); real floating point.
            Float16 and bfloat16 are scored in float32 (their scores overflow in half
            precision); integer and complex tensors are rejected.
        k: keys ``(B, H, M, D)``, of the same dtype.
        alpha: entmax α, finite and > 1; 1.5 uses the exact sort-based algorithm, others
            bisection.
        lengths: ``(B,)`` valid lengths; keys and queries at or beyond a length are excluded,
            so a fully padded sequence has no edges.
        causal: exclude keys after the query.
        with_probs: keep the gold probabilities of the edges (for mass recall).

    Returns:
        A :class:`Graph` with one :class:`RowIndex` part (or a dense mask when the support is
        wider than an eighth of the keys, where a mask is the smaller form).

    Raises:
        ValueError: for invalid tensors or lengths, or an α that is not finite and > 1.
    """
    lengths = check_qk(q, k, lengths=lengths, causal=causal)
    alpha = check_alpha(alpha)
    with torch.no_grad():
        index, probs = gold_rows(
            q, k, alpha=alpha, lengths=lengths, causal=causal, with_probs=with_probs
        )
    B, H, N, _ = q.shape
    shape = (B, H, N, k.shape[2])
    if index.shape[-1] * 8 > shape[3] and not with_probs:
        part = RowIndex(index)
        dense = torch.zeros(shape, dtype=torch.bool)
        step = max(1, _SLAB_SCORES // max(1, B * H * shape[3]))
        for s in range(0, N, step):
            dense[:, :, s : s + step] = part.slab(s, min(N, s + step), shape)
        return Graph(shape, [DenseMask(dense)], lengths=lengths, causal=causal)
    return Graph(shape, [RowIndex(index, probs)], lengths=lengths, causal=causal)
