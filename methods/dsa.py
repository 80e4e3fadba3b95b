"""DSA (Liu et al., 2021): low-precision random-projection scores, then per-row top-k."""

from __future__ import annotations

import math
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

__all__ = ["DSA", "achlioptas_matrix", "quantize"]

_DENSITIES = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5]


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

    def scores(self, q: Tensor, k: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Approximate scores ``(B, H, N, M)`` from the projected, quantised q and k."""
        B, H, N, d = q.shape
        M = k.shape[2]
        pq, pk = self._projections(H, d)
        qp = torch.einsum("bhnd,hdr->bhnr", q.float(), pq)
        kp = torch.einsum("bhmd,hdr->bhmr", k.float(), pk)
        q_real = real_tokens(lengths, B, N).view(B, 1, N, 1)
        k_real = real_tokens(lengths, B, M).view(B, 1, M, 1)
        qp = quantize(torch.where(q_real, qp, 0.0), self.bits, q_real)
        kp = quantize(torch.where(k_real, kp, 0.0), self.bits, k_real)
        return qp @ kp.transpose(-1, -2)

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        s = self.scores(q, k, lengths)
        valid = valid_pairs(B, N, M, lengths, causal).expand(B, 1, N, M)
        s = torch.where(valid, s, float("-inf"))
        if self.select == "threshold":
            return Graph((B, H, N, M), [DenseMask(_threshold_mask(s, valid, self.density))])
        return Graph((B, H, N, M), [RowIndex(top_density(s, valid, self.density))])


def top_density(scores: Tensor, valid: Tensor, density: float) -> Tensor:
    """Per-row top ``ceil(density * valid keys)`` of ``scores`` as a ``(B, H, N, K)`` key list.

    Args:
        scores: ``(B, H, N, M)``, ``-inf`` where not valid.
        valid: ``(B, 1|H, N, M)`` bool.
        density: fraction of each row's valid keys to keep.
    """
    per_row = torch.ceil(density * valid.sum(-1).double() - 1e-9).long()  # (B, 1|H, N)
    width = max(1, int(per_row.max())) if per_row.numel() else 1
    width = min(width, scores.shape[-1])
    _, idx = scores.topk(width, dim=-1)  # (B, H, N, width)
    keep = torch.arange(width).view(1, 1, 1, -1) < per_row.unsqueeze(-1)
    return torch.where(keep, idx, -1)


def _threshold_mask(scores: Tensor, valid: Tensor, density: float) -> Tensor:
    """Scores at or above one cut per (B, H) keeping ``density`` of the valid pairs."""
    B, H, N, M = scores.shape
    flat = scores.reshape(B, H, N * M)
    count = torch.ceil(density * valid.reshape(B, -1).sum(-1).double() - 1e-9).long()  # (B,)
    width = max(1, int(count.max()))
    vals, _ = flat.topk(min(width, N * M), dim=-1)  # (B, H, width)
    cut = vals.gather(-1, (count.view(B, 1, 1) - 1).clamp(min=0).expand(B, H, 1))
    mask = (scores >= cut.unsqueeze(-1)) & valid
    return mask & (count.view(B, 1, 1, 1) > 0)


def _sqrt_psd(a: Tensor) -> Tensor:
    """Symmetric square root of a positive semi-definite matrix."""
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T
