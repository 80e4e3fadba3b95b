"""DSA (Liu et al., 2021): low-precision random-projection scores, then per-row top-k.

Also the row-slab helpers of every predictor that scores all (query, key) pairs (DSA, the
``topk_oracle`` and ``random`` rows, Sparsefinder's distance threshold): scores are drawn a slab
of query rows at a time (:func:`score_slabs`), so a prediction holds its output graph and a
working set of fixed size, never the ``N x M`` float scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Self

import torch
from torch import Tensor

from ._base import Composable, Grid, Tags, param, predict_time
from ._masks import real_tokens, valid_pairs
from ._registry import register
from .graph import Graph
from .parts import DenseMask, RowIndex

if TYPE_CHECKING:
    from sparsebench.datasets import QKData

__all__ = [
    "DSA",
    "ScoreSlab",
    "achlioptas_matrix",
    "quantize",
    "score_slabs",
    "threshold_mask",
    "top_density",
    "top_rows",
    "valid_per_row",
]

_DENSITIES = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5]

#: A slab of query rows holds about this many float32 scores (16 MB), so a predictor's working
#: set stays near a fixed size at any length.
_SLAB_SCORES = 1 << 22
#: Slabs hold a multiple of this many rows and the rows left over join the last slab, so each
#: slab's matrix product tiles its rows as the product over all rows does: slab scores are bit
#: for bit those of the whole product (MKL hands one to three rows to other kernels, which
#: round differently; a test checks this).
_SLAB_ALIGN = 16

#: ``scores(start, stop)``: the ``(B, H, stop - start, M)`` scores of query rows
#: ``[start, stop)``, a fresh tensor (callers mask it in place).
ScoreSlab = Callable[[int, int], Tensor]


def achlioptas_matrix(d: int, k: int, g: torch.Generator) -> Tensor:
    """Sparse random projection ``(d, k)``: entries ``sqrt(3) * {+1, 0, -1}`` w.p. 1/6, 2/3, 1/6."""
    u = torch.rand(d, k, generator=g)
    signs = torch.where(u < 1 / 6, 1.0, torch.where(u < 1 / 3, -1.0, 0.0))
    return signs * math.sqrt(3.0)


def quantize(x: Tensor, bits: int | None, valid: Tensor) -> Tensor:
    """Symmetric uniform quantisation with one scale per ``(B, H)`` tensor.

    Args:
        x: ``(B, H, T, k)`` values.
        bits: bit width; ``None`` or 0 = no quantisation; 1 = sign.
        valid: ``(B, 1|H, T, 1)`` bool, the tokens that set the scale (padding is ignored).

    Returns:
        The de-quantised values (at most ``2**bits`` distinct levels per tensor).
    """
    if not bits:
        return x
    if bits == 1:
        return torch.where(x >= 0, 1.0, -1.0)
    levels = 2 ** (bits - 1) - 1
    amax = torch.where(valid, x.abs(), 0.0).amax(dim=(-1, -2), keepdim=True)
    scale = torch.where(amax > 0, amax / levels, 1.0)
    return torch.clamp(torch.round(x / scale), -levels, levels) * scale


@register("dsa")
@dataclass(kw_only=True)
class DSA(Composable):
    """DSA (Liu et al., 2021): approximate scores from projected, quantised q and k, then top-k.

    Paper: Liu, Qu, Chen, Ding, Xie, "Transformer Acceleration with Dynamic Sparse Attention"
    (arXiv:2110.11299). Not DeepSeek Sparse Attention, which shares the acronym. No official code
    exists; this is reconstructed from the paper's description and may differ from it in detail.
    Queries and keys are projected to ``k = max(1, round(sigma * d))`` dimensions by a sparse
    Achlioptas ``±1`` matrix drawn from ``seed`` (one per head, shared by q and k), quantised to
    ``bits`` bits (symmetric, one scale per sequence and head, set by its real tokens), and the
    approximate scores are their product. The mask keeps, per query row, the
    ``ceil(density * valid keys)`` highest approximate scores (``select="topk"``), or, with
    ``select="threshold"``, all scores above one cut per sequence and head placed so that the
    fraction ``density`` of its valid pairs is kept (rows then vary).

    With ``fit_projection=True``, ``fit`` replaces the random matrices by per-head projections
    ``W_q, W_k`` (``d x k``) that minimise the mean squared error between ``(q W_q)(k W_k)ᵀ`` and
    the true logits ``q kᵀ/√d`` for query/key pairs drawn from the train split, solved in closed
    form (a whitened truncated SVD). The paper trains its prediction path jointly with the model
    under an MSE-type loss; this is the post-hoc analogue on extracted q/k.

    Cost (``complexity``, with ``r`` the projected dimension written ``k`` above and ``k`` the
    keys kept per row): the scores are drawn a slab of query rows at a time, so memory is one
    slab plus the output, the ``N k`` key lists for top-k or an ``N x N`` bool mask for the
    threshold; its cut is found exactly in three more passes over the slabs (a radix selection),
    never from the whole score matrix.

    Attributes:
        sigma: projected dimension as a fraction of the head dim.
        bits: quantisation bits, at most 32 (``None`` or 0 = full precision).
        density: fraction of valid keys kept per row (or per tensor for thresholds).
        select: ``"topk"`` or ``"threshold"``.
        fit_projection: learn the projections on the train split (``fit`` is then needed).
    """

    label: ClassVar[str] = "DSA (Liu et al., 2021)"

    sigma: float = param(0.25, above=0)
    bits: int | None = predict_time(4, min=0, max=32)
    density: float = predict_time(0.1, min=0, max=1)
    select: Literal["topk", "threshold"] = predict_time("topk")
    fit_projection: bool = False
    tags: ClassVar[Tags] = Tags(stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"density": _DENSITIES, "sigma": [0.125, 0.25, 0.5]},
        "paper_mlm": {"density": _DENSITIES, "sigma": [0.125, 0.25, 0.5]},
        "quick": {"density": [0.05, 0.2]},
    }
    complexity: ClassVar[dict[str, str]] = {
        "time": "O(N² (r + log k))",
        "memory": "O(s N + N k); threshold: O(N²)",
    }

    def _dim(self, d: int) -> int:
        return max(1, round(self.sigma * d))

    def fit(self, train: QKData, layer: int) -> Self:
        """Fit the projections on ``train`` when ``fit_projection`` is set (else a no-op)."""
        if not self.validate().fit_projection:
            return self
        full = train.layer(layer)
        S, H, n, d = full.q.shape
        real = real_tokens(full.lengths, S, n)
        r = self._dim(d)
        wq, wk = [], []
        for h in range(H):
            qh = full.q[:, h][real].double()  # (P, d)
            kh = full.k[:, h][real].double()
            sq = _sqrt_psd(qh.T @ qh / qh.shape[0])
            sk = _sqrt_psd(kh.T @ kh / kh.shape[0])
            # min ||Sq (A - I/√d) Sk||_F over rank-r A = Wq Wkᵀ: truncated SVD in whitened space.
            u, s, vh = torch.linalg.svd(sq @ sk / math.sqrt(d))
            root = s[:r].sqrt()
            wq.append(torch.linalg.pinv(sq) @ (u[:, :r] * root))
            wk.append(torch.linalg.pinv(sk) @ (vh[:r].T * root))
        self.w_q_ = torch.stack(wq).float()  # (H, d, r)
        self.w_k_ = torch.stack(wk).float()
        return self

    def _projections(self, H: int, d: int) -> tuple[Tensor, Tensor]:
        if self.fit_projection:
            if not hasattr(self, "w_q_"):
                raise RuntimeError(f"{self.id} must be fitted first: call .fit(train, layer)")
            if self.w_q_.shape[:2] != (H, d):
                raise ValueError(
                    f"projections were fitted for {self.w_q_.shape[0]} heads of dim "
                    f"{self.w_q_.shape[1]}, got {H} heads of dim {d}"
                )
            return self.w_q_, self.w_k_
        p = torch.stack([achlioptas_matrix(d, self._dim(d), self._generator(h)) for h in range(H)])
        return p, p

    def _projected(self, q: Tensor, k: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """Projected, quantised queries ``(B, H, N, r)`` and keys ``(B, H, M, r)``."""
        B, H, N, d = q.shape
        M = k.shape[2]
        pq, pk = (p.to(q.device) for p in self._projections(H, d))
        qp = torch.einsum("bhnd,hdr->bhnr", q.float(), pq)
        kp = torch.einsum("bhmd,hdr->bhmr", k.float(), pk)
        q_real = real_tokens(lengths, B, N, q.device).view(B, 1, N, 1)
        k_real = real_tokens(lengths, B, M, q.device).view(B, 1, M, 1)
        qp = quantize(torch.where(q_real, qp, 0.0), self.bits, q_real)
        kp = quantize(torch.where(k_real, kp, 0.0), self.bits, k_real)
        return qp, kp

    def scores(self, q: Tensor, k: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Approximate scores ``(B, H, N, M)`` at once (``predict`` draws them a slab at a time)."""
        qp, kp = self._projected(q, k, lengths)
        return qp @ kp.transpose(-1, -2)

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        shape = (B, H, N, k.shape[2])
        qp, kp = self._projected(q, k, lengths)
        kt = kp.transpose(-1, -2)  # (B, H, r, M)

        def scores(start: int, stop: int) -> Tensor:
            return qp[:, :, start:stop] @ kt  # (B, H, rows, M)

        validity = {"lengths": lengths, "causal": causal, "device": q.device}
        if self.select == "threshold":
            mask = threshold_mask(scores, shape, self.density, **validity)
            return Graph(shape, [DenseMask(mask)])
        index = top_density(scores, shape, self.density, **validity)
        return Graph(shape, [RowIndex(index)])


def score_slabs(shape: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """Query row ranges ``[start, stop)`` whose ``(B, H, rows, M)`` scores fit the slab budget.

    Slabs hold a multiple of 16 rows (at least 16) and the rows left over join the last slab,
    so a slab's matrix product gives the bits of the product over all rows.
    """
    B, H, N, M = shape
    rows = max(_SLAB_ALIGN, _SLAB_SCORES // max(1, B * H * M) // _SLAB_ALIGN * _SLAB_ALIGN)
    chunks = list(Graph(shape).row_chunks(rows, multiple=_SLAB_ALIGN))
    if len(chunks) > 1 and chunks[-1][1] - chunks[-1][0] < rows:
        chunks[-2:] = [(chunks[-2][0], chunks[-1][1])]
    return chunks


def valid_per_row(
    shape: tuple[int, int, int, int], lengths: Tensor | None, causal: bool, device
) -> Tensor:
    """Valid keys of each query row, int64 ``(B|1, 1, N)`` (batch 1 without ``lengths``)."""
    B, _, N, M = shape
    if lengths is None and not causal:
        return torch.full((1, 1, N), M, dtype=torch.long, device=device)
    out = torch.empty(1 if lengths is None else B, 1, N, dtype=torch.long, device=device)
    for s, e in Graph((B, 1, N, M)).row_chunks():  # bool slabs of the graph's budget
        out[:, :, s:e] = valid_pairs(B, N, M, lengths, causal, device, rows=(s, e)).sum(-1)
    return out


def _masked(slab: Tensor, s: int, e: int, shape, lengths: Tensor | None, causal: bool) -> Tensor:
    """Score slab of rows ``[s, e)`` with ``-inf`` on invalid pairs (in place)."""
    if lengths is None and not causal:
        return slab
    B, _, N, M = shape
    return slab.masked_fill_(
        ~valid_pairs(B, N, M, lengths, causal, slab.device, rows=(s, e)), -math.inf
    )


def top_rows(
    scores: ScoreSlab,
    shape: tuple[int, int, int, int],
    width: int,
    per_row: Tensor,
    *,
    lengths: Tensor | None,
    causal: bool,
    device: torch.device,
) -> Tensor:
    """The best-scored valid keys of each query row, a row slab at a time.

    Args:
        scores: the score slabs (see :data:`ScoreSlab`).
        shape: ``(B, H, N, M)``.
        width: keys listed per row (``torch.topk``'s ``k``; at most ``M``).
        per_row: ``(B|1, 1|H, N)`` keys kept per row (the first ones listed; the rest are
            ``-1``). Valid scores are finite, so a row's valid keys are listed before the others.
        lengths: ``(B,)`` valid lengths or ``None``.
        causal: exclude keys after the query.
        device: where the key lists live (that of the scores).

    Returns:
        Int64 ``(B, H, N, width)`` key lists, best first, ``-1`` where not kept.
    """
    B, H, N, M = shape
    out = torch.empty(B, H, N, width, dtype=torch.long, device=device)
    ranks = torch.arange(width, device=device)
    short = bool((per_row < width).any())  # some row keeps fewer than width keys
    for s, e in score_slabs(shape):
        slab = _masked(scores(s, e), s, e, shape, lengths, causal)  # (B, H, c, M)
        idx = slab.topk(width, dim=-1).indices  # (B, H, c, width)
        if short:
            idx.masked_fill_(ranks >= per_row[:, :, s:e, None], -1)
        out[:, :, s:e] = idx
    return out


def top_density(
    scores: ScoreSlab,
    shape: tuple[int, int, int, int],
    density: float,
    *,
    lengths: Tensor | None,
    causal: bool,
    device: torch.device,
) -> Tensor:
    """Per-row top ``ceil(density * valid keys)`` of the scores as a ``(B, H, N, K)`` key list.

    Arguments as for :func:`top_rows`, with ``density`` the fraction of each row's valid keys
    to keep. Returns int64 key lists, ``K`` the widest row's count, ``-1`` padding the others.
    """
    valid = valid_per_row(shape, lengths, causal, device)
    per_row = torch.ceil(density * valid.double() - 1e-9).long()  # (B|1, 1, N)
    width = min(max(1, int(per_row.max())) if per_row.numel() else 1, shape[3])
    return top_rows(scores, shape, width, per_row, lengths=lengths, causal=causal, device=device)


def threshold_mask(
    scores: ScoreSlab,
    shape: tuple[int, int, int, int],
    density: float,
    *,
    lengths: Tensor | None,
    causal: bool,
    device: torch.device,
) -> Tensor:
    """Scores at or above one cut per ``(B, H)`` that keeps ``density`` of the valid pairs.

    The cut is the ``ceil(density * valid pairs)``-th largest valid score, found exactly by
    :func:`_kth_largest` without holding the ``N x M`` scores. Arguments as for
    :func:`top_density`.

    Returns:
        Bool ``(B, H, N, M)``.
    """
    B, H, N, M = shape
    total = valid_per_row(shape, lengths, causal, device).sum((1, 2)).expand(B)
    count = torch.ceil(density * total.double() - 1e-9).long()  # (B,)
    cut = _kth_largest(scores, shape, count, lengths=lengths, causal=causal, device=device)
    cut = torch.where(count.view(B, 1) > 0, cut, math.inf).view(B, H, 1, 1)  # 0: no edge
    out = torch.empty(shape, dtype=torch.bool, device=device)
    for s, e in score_slabs(shape):
        # -inf (invalid) never reaches a finite cut; an infinite cut keeps nothing.
        out[:, :, s:e] = _masked(scores(s, e), s, e, shape, lengths, causal) >= cut
    return out


_SIGN = torch.iinfo(torch.int32).min  # the int32 with only the sign bit set


def _kth_largest(
    scores: ScoreSlab, shape, count: Tensor, *, lengths: Tensor | None, causal: bool, device
) -> Tensor:
    """The ``count``-th largest valid score of each ``(B, H)``, exactly: a radix selection.

    Scores become 32-bit keys in the same order (:func:`_order_key`). Each pass counts, slab by
    slab, the next digit of the keys that share the digits found so far, then picks the digit
    that holds the rank: two passes of 16-bit digits for at most 16 sequences and heads (65536
    counts each), else three of 11, 11 and 10 bits (2048 counts each), so the counts stay
    within 8 MB per 16 sequences and heads. A ``count`` of 0 is taken as 1.

    Returns:
        Float32 ``(B, H)``.
    """
    B, H, N, M = shape
    rank = count.clamp(min=1).view(B, 1).expand(B, H)  # 1-based, from the top, within prefix
    prefix = torch.zeros(B, H, dtype=torch.long, device=device)
    base = torch.arange(B * H, dtype=torch.int32, device=device).view(B, H, 1, 1)
    done = 0
    for bits in (16, 16) if B * H <= 16 else (11, 11, 10):
        shift, bins = 32 - done - bits, 1 << bits
        hist = torch.zeros(B * H * bins + 1, dtype=torch.long, device=device)
        for s, e in score_slabs(shape):
            key = _order_key(_masked(scores(s, e), s, e, shape, lengths, causal))
            digit = ((key >> shift) & (bins - 1)).add_(base * bins)  # (B, H, c, M) bin ids
            if done:
                high = (key >> (shift + bits)) & ((1 << done) - 1)
                digit.masked_fill_(high != prefix.int().view(B, H, 1, 1), B * H * bins)
            hist += torch.bincount(digit.flatten(), minlength=B * H * bins + 1)
        # above[..., j]: keys whose digit is one of the j + 1 largest.
        above = hist[:-1].view(B, H, bins).flip(-1).cumsum(-1)
        j = (above < rank.unsqueeze(-1)).sum(-1, keepdim=True)  # (B, H, 1)
        rank = rank - torch.where(j > 0, above.gather(-1, (j - 1).clamp(min=0)), 0).squeeze(-1)
        prefix = (prefix << bits) | (bins - 1 - j.squeeze(-1))
        done += bits
    return _from_order_key(prefix)


def _order_key(x: Tensor) -> Tensor:
    """Int32 keys of float32 ``x`` (overwritten) whose unsigned order is the float order.

    Non-negative floats get their sign bit set; negative ones get every bit flipped, so larger
    magnitudes sort lower. (``-0.0`` sorts just below ``+0.0``; they compare equal, so either
    one as the cut keeps the same pairs.)
    """
    bits = x.view(torch.int32)
    return bits.bitwise_xor_((bits >> 31) | _SIGN)


def _from_order_key(key: Tensor) -> Tensor:
    """Float32 values of unsigned 32-bit keys held in int64 (the inverse of :func:`_order_key`)."""
    bits = torch.where(key >= 1 << 31, key - (1 << 31), (1 << 32) - 1 - key)
    bits = torch.where(bits >= 1 << 31, bits - (1 << 32), bits)  # as a signed int32
    return bits.to(torch.int32).view(torch.float32)


def _sqrt_psd(a: Tensor) -> Tensor:
    """Symmetric square root of a positive semi-definite matrix."""
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T
