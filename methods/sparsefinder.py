"""Sparsefinder: learned low-dimensional projections of queries and keys, then grouping.

Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022 (arXiv:2109.12188).
Every variant trains, per layer and head, a linear map ``d -> r`` of the queries and keys so that
gold (α-entmax support) pairs land close and other pairs far apart, then predicts the graph from
the projected vectors: a distance threshold, per-coordinate buckets, k-means clusters, or
clusters of contiguous token blocks.

This module holds the distance and quantization variants; the k-means and block variants are in
:mod:`sparsebench.methods.sparsefinder_kmeans`, the projector they all train in
:mod:`sparsebench.methods._learned`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ._base import MLM_WINDOWS, MT_WINDOWS, Grid, Tags, predict_time
from ._learned import LearnedProjection, sq_dists
from ._masks import real_tokens
from ._registry import register
from .dsa import score_slabs
from .graph import Graph
from .parts import DenseMask, Groups

__all__ = [
    "SparsefinderDistance",
    "SparsefinderQuantize",
    "count_to_size",
    "dynamic_buckets",
    "fixed_buckets",
]

_COS_T = [round(0.1 * i, 1) for i in range(1, 11)]
_L2_T = [0.5 * i for i in range(1, 11)] + [6.0, 7.0, 8.0, 9.0, 10.0]
#: The talk slides' "num. of buckets / clusters ∈ {2, 4, …, 20}".
_BETAS = list(range(2, 21, 2))


@register("sparsefinder_distance")
@dataclass(kw_only=True)
class SparsefinderDistance(LearnedProjection):
    """Sparsefinder with a distance threshold: edge iff ``dist(q'_i, k'_j) < t``.

    Paper: Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022
    (arXiv:2109.12188), distance-based grouping. ``dist`` is ``"l2"`` (squared Euclidean, the
    paper's default), ``"euclidean"`` or ``"cos"`` (``1 - cosine``). The threshold is one scalar
    for all heads (the reference also accepts a per-head list). Grids: ``paper``/``paper_mlm``
    sweep the squared-L2 thresholds and ``paper_cos``/``paper_mlm_cos`` the cosine ones (a grid is
    a product, so the two distances are separate settings). The distances are drawn a slab of
    query rows at a time into the output, a bool mask of every pair (``complexity``).

    Projection training (all variants): Adam, gradient clipping, one hinge per query on the summed
    squared distances to its gold keys minus those to as many uniformly drawn non-gold valid keys.
    Deviations from the reference code: queries with fewer available negatives than positives use
    the ones there are (the reference then draws positives or padding, B6); in a causal layer the
    negatives are drawn among keys ``j <= i`` unless ``official_future_negatives=True``; the init
    is ``nn.Linear``'s unless ``official_init=True`` (B18); shared projectors get one Adam update
    per step unless ``official_double_update=True`` (B2).

    Attributes:
        dist: ``"l2"``, ``"euclidean"`` or ``"cos"``.
        t: threshold; ``t = 0`` predicts no edge.
    """

    dist: Literal["l2", "euclidean", "cos"] = predict_time("l2")
    t: float = predict_time(2.0, min=0)
    tags: ClassVar[Tags] = Tags(requires_fit=True, stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"dist": ["l2"], "t": _L2_T, "window": MT_WINDOWS},
        "paper_cos": {"dist": ["cos"], "t": _COS_T, "window": MT_WINDOWS},
        "paper_mlm": {"dist": ["l2"], "t": _L2_T, "window": MLM_WINDOWS},
        "paper_mlm_cos": {"dist": ["cos"], "t": _COS_T, "window": MLM_WINDOWS},
        "quick": {"dist": ["l2"], "t": [1.0, 3.0, 6.0]},
    }
    complexity: ClassVar[dict[str, str]] = {"time": "O(N d r + N² r)", "memory": "O(N²)"}

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        qp, kp = self._project(q, "q"), self._project(k, "k")
        if self.dist == "cos":
            qp = torch.nn.functional.normalize(qp, dim=-1)
            kp = torch.nn.functional.normalize(kp, dim=-1)
        B, H, N, _ = q.shape
        shape = (B, H, N, k.shape[2])
        mask = torch.empty(shape, dtype=torch.bool, device=qp.device)
        for s, e in score_slabs(shape):
            torch.lt(self._distances(qp[:, :, s:e], kp), self.t, out=mask[:, :, s:e])
        return Graph(shape, [DenseMask(mask)])

    def _distances(self, qp: Tensor, kp: Tensor) -> Tensor:
        """Distances ``(B, H, rows, M)`` of projected queries to projected keys."""
        if self.dist == "cos":
            return 1 - qp @ kp.transpose(-1, -2)  # both normalised
        d = sq_dists(qp, kp)
        return d.sqrt() if self.dist == "euclidean" else d


def fixed_buckets(x: Tensor, lengths: Tensor | None, size: int | Tensor) -> Tensor:
    """Equal-population buckets per coordinate: ``rank // size`` over the real tokens.

    Args:
        x: projected vectors ``(B, H, N, r)``.
        lengths: ``(B,)`` or ``None``; padding gets bucket ``-1`` and takes no rank.
        size: tokens per bucket ``S``: one int, or a ``(B,)`` tensor with one per sequence.

    Returns:
        Int64 ``(B, H, N, r)`` bucket ids.
    """
    B, _, N, _ = x.shape
    real = real_tokens(lengths, B, N, x.device).view(B, 1, N, 1)
    keyed = x.masked_fill(~real, float("inf"))
    order = keyed.argsort(dim=2, stable=True)
    rank = torch.empty_like(order)
    ar = torch.arange(N, device=x.device).view(1, 1, N, 1).expand_as(order)
    rank.scatter_(2, order, ar)
    if isinstance(size, Tensor):
        size = size.to(x.device).view(B, 1, 1, 1)
    return torch.where(real, rank // size, -1)


def dynamic_buckets(
    x: Tensor, lengths: Tensor | None, size: int | Tensor, temp: float, padded_length: bool
) -> Tensor:
    """Equal-width buckets of ``tanh(temp·x)`` over ``(-1, 1)``, ``ceil(n/size)`` of them.

    ``n`` is each sequence's length, or the padded length ``N`` when ``padded_length`` (bug B8);
    ``size`` is one int or a ``(B,)`` tensor with one per sequence. Boundaries are
    ``linspace(-1 + 2/K, 1 - 2/K, K - 1)``; values on a boundary go to the lower bucket
    (``bucketize(right=False)``). Padding gets ``-1``.
    """
    B, _, N, _ = x.shape
    v = torch.tanh(temp * x)
    n = torch.full((B,), N) if lengths is None or padded_length else lengths
    sizes = size.tolist() if isinstance(size, Tensor) else [size] * B
    out = torch.empty(v.shape, dtype=torch.long, device=x.device)
    for b in range(B):
        K = max(1, math.ceil(int(n[b]) / sizes[b]))
        edges = torch.linspace(-1 + 2 / K, 1 - 2 / K, K - 1, device=x.device, dtype=v.dtype)
        out[b] = torch.bucketize(v[b].contiguous(), edges, right=False)
    return torch.where(real_tokens(lengths, B, N, x.device).view(B, 1, N, 1), out, -1)


def count_to_size(lengths: Tensor | None, B: int, N: int, num_buckets: int) -> Tensor:
    """Tokens per bucket ``ceil(n / β)`` of each sequence for ``β = num_buckets`` buckets.

    The talk slides' form: "quantize each of the r dims into β bins of size ⌈n/β⌉" (``n = 10``,
    ``β = 2``: bins of 5 tokens). ``n`` is each sequence's length (``N`` without ``lengths``);
    an empty sequence gets size 1.

    Returns:
        Int64 ``(B,)``.
    """
    n = torch.full((B,), N, dtype=torch.long) if lengths is None else lengths.long().cpu()
    return ((n + num_buckets - 1) // num_buckets).clamp(min=1)


@register("sparsefinder_quantize")
@dataclass(kw_only=True)
class SparsefinderQuantize(LearnedProjection):
    """Sparsefinder with per-coordinate buckets: edge iff q' and k' share a bucket somewhere.

    Paper: Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022
    (arXiv:2109.12188), quantization grouping. Each of the ``r`` projected coordinates is
    bucketed on its own, queries and keys separately; ``(i, j)`` is an edge iff they fall in the
    same bucket for at least one coordinate. ``mode="fixed"``: equal-population buckets of ``S``
    tokens (ranks over the sequence's real tokens, the t-th query bucket meets the t-th key
    bucket; the last bucket may be partial). ``mode="dynamic"``: ``tanh(temp·x')`` cut into
    ``ceil(n/S)`` equal-width bins of ``(-1, 1)``.

    The bucket size ``S`` comes in two forms, one per source:

    * ``num_buckets=β`` — the paper's form (talk slides: "quantize each of the r dims into β
      bins of size ⌈n/β⌉"; also the official MLM evaluation model's ``--bucket_size``):
      ``S = ceil(n/β)`` for each sequence of length ``n``, so ``n = 10, β = 2`` gives bins of 5
      tokens. The ``paper`` and ``paper_mlm`` grids sweep ``β ∈ {2, 4, …, 20}``.
    * ``bucket_size=S`` — the official graph script's form (``-s S``: tokens per bucket, the
      same ``S`` for every length). Used when ``num_buckets`` is ``None`` (the default, so
      existing method ids are unchanged); the ``official_script`` (``S ∈ {4, 8, …, 20}``) and
      ``official_script_mlm`` (``S ∈ {4, 6, …, 12}``) grids sweep it. Set one form, not both.

    Deviation: ``n`` is the sequence's own length; ``official_padded_length=True`` uses the padded
    batch length as the reference code does (bug B8). With ``bucket_size`` that changes the
    dynamic bins only (fixed buckets of real tokens are the same either way: padding sorts
    last); with ``num_buckets`` it also sets ``S = ceil(N_padded/β)``. In a causal layer the
    fixed ranks use the whole sequence, future tokens included, as in the paper. Projection
    training and its switches (``official_init``, ``official_double_update``,
    ``official_future_negatives``) are described in :class:`SparsefinderDistance`. Predicting
    scores no pairs: the graph is the bucket ids, ``N r`` per sequence and head (``complexity``).

    Attributes:
        mode: ``"fixed"`` or ``"dynamic"``.
        bucket_size: ``S``, tokens per bucket (fixed) or per bin on average (dynamic); the
            official script's form, used when ``num_buckets`` is ``None``.
        num_buckets: ``β``, buckets per coordinate of a sequence (bins of ``ceil(n/β)``
            tokens); the paper's form, ``None`` = use ``bucket_size``.
        temp: tanh temperature of the dynamic mode.
        official_padded_length: take ``n`` from the padded batch length (B8).
    """

    mode: Literal["fixed", "dynamic"] = predict_time("fixed")
    bucket_size: int = predict_time(8, min=1)
    num_buckets: int | None = predict_time(None, min=1)
    temp: float = predict_time(1.0, above=0)
    official_padded_length: bool = predict_time(False)
    tags: ClassVar[Tags] = Tags(requires_fit=True, stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"mode": ["fixed", "dynamic"], "num_buckets": _BETAS, "window": MT_WINDOWS},
        "paper_mlm": {
            "mode": ["fixed", "dynamic"],
            "num_buckets": _BETAS,
            "window": MLM_WINDOWS,
        },
        "official_script": {
            "mode": ["fixed", "dynamic"],
            "bucket_size": [4, 8, 12, 16, 20],
            "window": MT_WINDOWS,
        },
        "official_script_mlm": {
            "mode": ["fixed", "dynamic"],
            "bucket_size": [4, 6, 8, 10, 12],
            "window": MLM_WINDOWS,
        },
        "quick": {"mode": ["fixed", "dynamic"], "num_buckets": [4, 16]},
    }
    complexity: ClassVar[dict[str, str]] = {"time": "O(N r (d + log N))", "memory": "O(N r)"}

    def _check_values(self) -> None:
        default = next(f.default for f in fields(self) if f.name == "bucket_size")
        if self.num_buckets is not None and self.bucket_size != default:
            raise ValueError(
                f"method {self.name!r}: set bucket_size (tokens per bucket, the official "
                f"script's form) or num_buckets (buckets per coordinate, the paper's form), not "
                f"both; got bucket_size={self.bucket_size}, num_buckets={self.num_buckets}"
            )

    def _size(self, lengths: Tensor | None, B: int, N: int) -> int | Tensor:
        """Tokens per bucket: ``bucket_size``, or ``ceil(n/β)`` per sequence."""
        if self.num_buckets is None:
            return self.bucket_size
        n = None if self.official_padded_length else lengths
        return count_to_size(n, B, N, self.num_buckets)

    def _buckets(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        size = self._size(lengths, x.shape[0], x.shape[2])
        if self.mode == "fixed":
            return fixed_buckets(x, lengths, size)
        return dynamic_buckets(x, lengths, size, self.temp, self.official_padded_length)

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        qb = self._buckets(self._project(q, "q"), lengths)  # (B, H, N, r)
        kb = self._buckets(self._project(k, "k"), lengths)
        B, H, N, _ = q.shape
        return Graph((B, H, N, k.shape[2]), [Groups(qb, kb, match="slot")])
