"""Sparsefinder: learned low-dimensional projections of queries and keys, then grouping.

Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022 (arXiv:2109.12188).
Every variant trains, per layer and head, a linear map ``d -> r`` of the queries and keys so that
gold (α-entmax support) pairs land close and other pairs far apart, then predicts the graph from
the projected vectors: a distance threshold, per-coordinate buckets, k-means clusters, or
clusters of contiguous token blocks.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Self

import torch
from torch import Tensor

from . import _projection as P
from ._base import Composable, Grid, Tags, predict_time
from ._registry import register
from .graph import Band, BlockLayout, DenseMask, Graph, Groups

if TYPE_CHECKING:
    from sparsebench.datasets import LayerData, QKData

__all__ = [
    "SparsefinderBlocks",
    "SparsefinderDistance",
    "SparsefinderKMeans",
    "SparsefinderQuantize",
]

_MT_WINDOWS = [0, 1, 3, 5, 7, 9, 11, 15, 19, 23, 27]
_MLM_WINDOWS = [0, 3, 11, 25]
_COS_T = [round(0.1 * i, 1) for i in range(1, 11)]
_L2_T = [0.5 * i for i in range(1, 11)] + [6.0, 7.0, 8.0, 9.0, 10.0]


# Trained projectors per training split: the variants and their configurations (thresholds,
# bucket sizes, cluster counts) train the same projector, so a sweep trains it once. Keyed by
# the split object's id; an entry is dropped when its split is collected.
_PROJECTIONS: dict[int, dict] = {}
_PROJECTION_FIELDS = (
    "seed",
    "proj_dim",
    "share_projectors",
    "margin",
    "lr",
    "weight_decay",
    "epochs",
    "batch_size",
    "grad_clip",
    "official_init",
    "official_double_update",
    "official_future_negatives",
)


@dataclass(kw_only=True)
class _SparsefinderBase(Composable):
    """Projection learning shared by the Sparsefinder variants (see the module docstring).

    Attributes:
        proj_dim: projected width ``r`` per head.
        share_projectors: one projector for queries and keys (the README's recommendation).
        margin: hinge margin ω of the loss.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        epochs: passes over the training split (0 keeps the initial projection).
        batch_size: sequences per optimisation step.
        grad_clip: gradient-norm clipping threshold.
        official_init: reference init (bias ``U(-1, 1)``, weight bound ``1/sqrt(d·r)``, bug B18)
            instead of the ``nn.Linear`` one.
        official_double_update: with shared projectors, apply Adam twice per step and clip the
            doubled gradient list, as the reference code does (bug B2).
        official_future_negatives: in a causal layer, let future keys be drawn as negatives
            (reference behaviour, B6) instead of only keys ``j <= i``.
    """

    proj_dim: int = 4
    share_projectors: bool = True
    margin: float = 1.0
    lr: float = 0.01
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 16
    grad_clip: float = 1.0
    official_init: bool = False
    official_double_update: bool = False
    official_future_negatives: bool = False

    # -- projection --------------------------------------------------------------------------
    def _check_fit_params(self) -> None:
        for name in ("proj_dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0 or not self.grad_clip > 0:
            raise ValueError(f"lr and grad_clip must be > 0, got {self.lr}, {self.grad_clip}")

    def _project(self, x: Tensor, which: Literal["q", "k"]) -> Tensor:
        w, b = (self.w_q_, self.b_q_) if which == "q" else (self.w_k_, self.b_k_)
        H, d, _ = w.shape
        if x.shape[1] != H or x.shape[3] != d:
            raise ValueError(
                f"{self.name} was fitted on {H} heads of size {d}, got input {tuple(x.shape)}; "
                "predict on the layer it was fitted on"
            )
        return P.project(x.float(), w.to(x.device), b.to(x.device))

    def _units(self, xp: Tensor, lengths: Tensor | None) -> Tensor:
        """The vectors the loss and grouping work on (tokens; blocks override this)."""
        return xp

    def _targets(self, lay: LayerData) -> tuple[Tensor, Tensor, Tensor | None]:
        """Positives, allowed negatives and unit lengths of one training batch."""
        B, _, N, _ = lay.q.shape
        pos = P.gold_mask(lay.q, lay.k, lengths=lay.lengths, causal=lay.causal, alpha=lay.alpha)
        causal = lay.causal and not self.official_future_negatives
        allowed = P.valid_pairs(B, N, N, lay.lengths, causal)
        return pos, allowed, lay.lengths

    def _batch_loss(self, lay: LayerData, params: list[Tensor], gen: torch.Generator) -> Tensor:
        wq, bq, wk, bk = params if len(params) == 4 else params * 2
        pos, allowed, ulen = self._targets(lay)
        uq = self._units(P.project(lay.q.float(), wq, bq), lay.lengths)
        uk = self._units(P.project(lay.k.float(), wk, bk), lay.lengths)
        neg = P.sample_negatives(pos, allowed, gen)
        return P.hinge_loss(uq, uk, pos, neg, ulen, self.margin)

    def fit(self, train: QKData, layer: int) -> Self:
        """Train the projector of one layer on the gold graphs of ``train``, then group.

        Args:
            train: the training split.
            layer: which layer.

        Returns:
            ``self``, with ``w_q_``, ``b_q_``, ``w_k_``, ``b_k_`` (and the variant's state) set.
        """
        self._check_fit_params()
        self._check_predict_params()
        if id(train) not in _PROJECTIONS:
            _PROJECTIONS[id(train)] = {}
            weakref.finalize(train, _PROJECTIONS.pop, id(train), None)
        memo = _PROJECTIONS[id(train)]
        key = (layer, self._projection_key())
        if key not in memo:
            memo[key] = self._train_projection(train, layer)
        self.w_q_, self.b_q_, self.w_k_, self.b_k_, history = memo[key]
        self.loss_history_ = list(history)
        self._fit_groups(train, layer)
        return self

    def _projection_key(self) -> tuple:
        """The parameters the trained projector depends on (variants add their unit size)."""
        return tuple((f, getattr(self, f)) for f in _PROJECTION_FIELDS)

    def _train_projection(self, train: QKData, layer: int) -> tuple:
        H, d, r = train.num_heads, train.head_dim, self.proj_dim
        g = self._generator(layer, 1)
        wq, bq = P.init_projection(H, d, r, g, official=self.official_init)
        params = [wq, bq]
        if not self.share_projectors:
            params += list(P.init_projection(H, d, r, g, official=self.official_init))
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        neg_gen = self._generator(layer, 2)
        history = []
        with torch.enable_grad():
            for _ in range(self.epochs):
                for lay in train.batches(layer, self.batch_size):
                    loss = self._batch_loss(lay, params, neg_gen)
                    opt.zero_grad()
                    loss.backward()
                    self._step(opt, params)
                    history.append(float(loss.detach()))
        wq, bq = params[0].detach(), params[1].detach()
        wk, bk = (params[2].detach(), params[3].detach()) if len(params) == 4 else (wq, bq)
        return wq, bq, wk, bk, tuple(history)

    def _step(self, opt: torch.optim.Optimizer, params: list[Tensor]) -> None:
        if self.official_double_update and self.share_projectors:
            # The reference lists the shared parameters twice: clipping sees each gradient twice
            # (norm x sqrt 2, and the scale is applied twice), then Adam updates each twice.
            grads = [p.grad for p in params if p.grad is not None]
            norm = math.sqrt(2) * math.sqrt(sum(float((gr * gr).sum()) for gr in grads))
            coef = self.grad_clip / (norm + 1e-6)
            if coef < 1:
                for gr in grads:
                    gr.mul_(coef * coef)
            opt.step()
            opt.step()
        else:
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            opt.step()

    def projection_loss(self, data: QKData, layer: int, *, seed: int = 0) -> float:
        """The training loss of the current projector on ``data`` (negatives drawn by ``seed``).

        Mean over the batches of ``batch_size`` sequences; for monitoring and tests.
        """
        if not self._is_fitted():
            raise RuntimeError(f"{self.id} must be fitted first: call .fit(train, layer)")
        params = [self.w_q_, self.b_q_, self.w_k_, self.b_k_]
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            losses = [
                float(self._batch_loss(lay, params, gen))
                for lay in data.batches(layer, self.batch_size)
            ]
        return sum(losses) / len(losses)

    def _fit_groups(self, train: QKData, layer: int) -> None:
        """Variant hook run after the projector is trained (k-means centroids)."""

    def _check_predict_params(self) -> None:
        """Variant hook: validate the parameters that the user may set wrong."""

    def _train_units(self, train: QKData, layer: int) -> Tensor:
        """Projected non-padding query and key units of the training split, ``(H, T, width)``."""
        chunks = []
        with torch.no_grad():
            for lay in train.batches(layer, 64):
                for x, which in ((lay.q, "q"), (lay.k, "k")):
                    u = self._units(self._project(x, which), lay.lengths)  # (B, H, U, w)
                    ulen = self._unit_lengths(lay.lengths, u.shape[2])
                    real = torch.arange(u.shape[2]).view(1, -1) < ulen.view(-1, 1)  # (B, U)
                    chunks.append(u.transpose(0, 1)[:, real])  # (H, real units, w)
        return torch.cat(chunks, 1)

    def _unit_lengths(self, lengths: Tensor, U: int) -> Tensor:
        return lengths


def _top_clusters(x: Tensor, centroids: Tensor, k: int) -> Tensor:
    """Indices ``(B, H, N, m, k)`` of the ``k`` nearest centroids ``(H, m, C, r)`` per run."""
    dist = P.sq_dists(x.unsqueeze(2), centroids.unsqueeze(0).to(x.device))  # (B, H, m, N, C)
    return dist.topk(k, dim=-1, largest=False).indices.transpose(2, 3)


@register("sparsefinder_distance")
@dataclass(kw_only=True)
class SparsefinderDistance(_SparsefinderBase):
    """Sparsefinder with a distance threshold: edge iff ``dist(q'_i, k'_j) < t``.

    Paper: Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022
    (arXiv:2109.12188), distance-based grouping. ``dist`` is ``"l2"`` (squared Euclidean, the
    paper's default), ``"euclidean"`` or ``"cos"`` (``1 - cosine``). The threshold is one scalar
    for all heads (the reference also accepts a per-head list). Grids: ``paper``/``paper_mlm``
    sweep the squared-L2 thresholds and ``paper_cos``/``paper_mlm_cos`` the cosine ones (a grid is
    a product, so the two distances are separate settings).

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
    t: float = predict_time(2.0)
    tags: ClassVar[Tags] = Tags(requires_fit=True, learned=True, stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"dist": ["l2"], "t": _L2_T, "window": _MT_WINDOWS},
        "paper_cos": {"dist": ["cos"], "t": _COS_T, "window": _MT_WINDOWS},
        "paper_mlm": {"dist": ["l2"], "t": _L2_T, "window": _MLM_WINDOWS},
        "paper_mlm_cos": {"dist": ["cos"], "t": _COS_T, "window": _MLM_WINDOWS},
        "quick": {"dist": ["l2"], "t": [1.0, 3.0, 6.0]},
    }

    def _check_predict_params(self) -> None:
        if self.dist not in ("l2", "euclidean", "cos"):
            raise ValueError(f"dist must be 'l2', 'euclidean' or 'cos', got {self.dist!r}")

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        self._check_predict_params()
        qp, kp = self._project(q, "q"), self._project(k, "k")
        if self.dist == "cos":
            qn = torch.nn.functional.normalize(qp, dim=-1)
            kn = torch.nn.functional.normalize(kp, dim=-1)
            d = 1 - qn @ kn.transpose(-1, -2)
        else:
            d = P.sq_dists(qp, kp)
            if self.dist == "euclidean":
                d = d.sqrt()
        B, H, N, _ = q.shape
        return Graph((B, H, N, k.shape[2]), [DenseMask(d < self.t)])


def fixed_buckets(x: Tensor, lengths: Tensor | None, size: int) -> Tensor:
    """Equal-population buckets per coordinate: ``rank // size`` over the real tokens.

    Args:
        x: projected vectors ``(B, H, N, r)``.
        lengths: ``(B,)`` or ``None``; padding gets bucket ``-1`` and takes no rank.
        size: tokens per bucket ``S``.

    Returns:
        Int64 ``(B, H, N, r)`` bucket ids.
    """
    B, _, N, _ = x.shape
    real = _real(B, N, lengths, x.device)  # (B, 1, N, 1)
    keyed = x.masked_fill(~real, float("inf"))
    order = keyed.argsort(dim=2, stable=True)
    rank = torch.empty_like(order)
    ar = torch.arange(N, device=x.device).view(1, 1, N, 1).expand_as(order)
    rank.scatter_(2, order, ar)
    return torch.where(real, rank // size, -1)


def dynamic_buckets(
    x: Tensor, lengths: Tensor | None, size: int, temp: float, padded_length: bool
) -> Tensor:
    """Equal-width buckets of ``tanh(temp·x)`` over ``(-1, 1)``, ``ceil(n/size)`` of them.

    ``n`` is each sequence's length, or the padded length ``N`` when ``padded_length`` (bug B8).
    Boundaries are ``linspace(-1 + 2/K, 1 - 2/K, K - 1)``; values on a boundary go to the lower
    bucket (``bucketize(right=False)``). Padding gets ``-1``.
    """
    B, _, N, _ = x.shape
    v = torch.tanh(temp * x)
    n = torch.full((B,), N) if lengths is None or padded_length else lengths
    out = torch.empty(v.shape, dtype=torch.long, device=x.device)
    for b in range(B):
        K = max(1, math.ceil(int(n[b]) / size))
        edges = torch.linspace(-1 + 2 / K, 1 - 2 / K, K - 1, device=x.device, dtype=v.dtype)
        out[b] = torch.bucketize(v[b].contiguous(), edges, right=False)
    return torch.where(_real(B, N, lengths, x.device), out, -1)


def _real(B: int, N: int, lengths: Tensor | None, device) -> Tensor:
    if lengths is None:
        return torch.ones(B, 1, N, 1, dtype=torch.bool, device=device)
    return torch.arange(N, device=device).view(1, 1, N, 1) < lengths.to(device).view(B, 1, 1, 1)


@register("sparsefinder_quantize")
@dataclass(kw_only=True)
class SparsefinderQuantize(_SparsefinderBase):
    """Sparsefinder with per-coordinate buckets: edge iff q' and k' share a bucket somewhere.

    Paper: Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022
    (arXiv:2109.12188), quantization grouping. Each of the ``r`` projected coordinates is
    bucketed on its own, queries and keys separately; ``(i, j)`` is an edge iff they fall in the
    same bucket for at least one coordinate. ``mode="fixed"``: equal-population buckets of
    ``bucket_size`` tokens (ranks over the sequence's real tokens, the t-th query bucket meets
    the t-th key bucket; the last bucket may be partial). ``mode="dynamic"``: ``tanh(temp·x')``
    cut into ``ceil(n/bucket_size)`` equal-width bins of ``(-1, 1)``.

    Deviation: ``n`` is the sequence's own length; ``official_padded_length=True`` uses the padded
    batch length as the reference code does (bug B8). That changes the dynamic bins only: fixed
    buckets of real tokens are the same either way (padding sorts last). In a causal layer the
    fixed ranks use the whole sequence, future tokens included, as in the paper. Projection
    training and its switches (``official_init``, ``official_double_update``,
    ``official_future_negatives``) are described in :class:`SparsefinderDistance`.

    Attributes:
        mode: ``"fixed"`` or ``"dynamic"``.
        bucket_size: ``S``, tokens per bucket (fixed) or per bin on average (dynamic).
        temp: tanh temperature of the dynamic mode.
        official_padded_length: count the dynamic bins from the padded length (B8).
    """

    mode: Literal["fixed", "dynamic"] = predict_time("fixed")
    bucket_size: int = predict_time(8)
    temp: float = predict_time(1.0)
    official_padded_length: bool = predict_time(False)
    tags: ClassVar[Tags] = Tags(
        requires_fit=True, learned=True, stochastic=True, structure=("groups",)
    )
    grid: ClassVar[Grid] = {
        "paper": {
            "mode": ["fixed", "dynamic"],
            "bucket_size": [4, 8, 12, 16, 20],
            "window": _MT_WINDOWS,
        },
        "paper_mlm": {
            "mode": ["fixed", "dynamic"],
            "bucket_size": [4, 6, 8, 10, 12],
            "window": _MLM_WINDOWS,
        },
        "quick": {"mode": ["fixed", "dynamic"], "bucket_size": [4, 12]},
    }

    def _check_predict_params(self) -> None:
        if self.mode not in ("fixed", "dynamic"):
            raise ValueError(f"mode must be 'fixed' or 'dynamic', got {self.mode!r}")
        if self.bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {self.bucket_size}")

    def _buckets(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        if self.mode == "fixed":
            return fixed_buckets(x, lengths, self.bucket_size)
        return dynamic_buckets(x, lengths, self.bucket_size, self.temp, self.official_padded_length)

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        self._check_predict_params()
        qb = self._buckets(self._project(q, "q"), lengths)  # (B, H, N, r)
        kb = self._buckets(self._project(k, "k"), lengths)
        B, H, N, _ = q.shape
        return Graph((B, H, N, k.shape[2]), [Groups(qb, kb, match="slot")])


@register("sparsefinder_kmeans")
@dataclass(kw_only=True)
class SparsefinderKMeans(_SparsefinderBase):
    """Sparsefinder with k-means: edge iff q' and k' share one of their nearest centroids.

    Paper: Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022
    (arXiv:2109.12188), clustering grouping. After the projector is trained, ``num_clusters``
    centroids per head are learned by Lloyd k-means on the projected non-padding queries and
    keys of the training split together (one set shared by queries and keys, unbalanced).
    ``runs`` independent clusterings are fitted (run 0 with k-means++ init, the others with
    random init and other seeds); each start keeps the best of ``n_init`` by inertia, as
    scikit-learn did. ``(i, j)`` is an edge iff, in at least one run, the sets of the
    ``top_clusters`` nearest centroids of ``q'_i`` and of ``k'_j`` intersect.

    Deviations and switches: torch k-means instead of scikit-learn's (same algorithm, different
    random draws). ``topk_semantics="per_rank"`` gives the reference's tensor-centroid path
    (the t-th nearest centroid of q equals the t-th of k for some t; bug B3).
    ``official_forced_diagonal=True`` adds every ``(i, i)`` pair when ``top_clusters > 1``,
    as the reference's scikit-learn path does by accident (bug B4). Projection training and its
    switches are described in :class:`SparsefinderDistance`.

    Attributes:
        num_clusters: ``B``, centroids per head and run.
        runs: ``m``, independent clusterings.
        n_init: k-means starts per run (best inertia kept).
        max_iter: Lloyd iterations at most.
        top_clusters: ``k``, nearest centroids per vector.
        topk_semantics: ``"intersection"`` or ``"per_rank"`` (B3).
        official_forced_diagonal: add the diagonal when ``top_clusters > 1`` (B4).
    """

    num_clusters: int = 8
    runs: int = 1
    n_init: int = 10
    max_iter: int = 300
    top_clusters: int = predict_time(1)
    topk_semantics: Literal["intersection", "per_rank"] = predict_time("intersection")
    official_forced_diagonal: bool = predict_time(False)
    tags: ClassVar[Tags] = Tags(
        requires_fit=True, learned=True, stochastic=True, structure=("groups",)
    )
    grid: ClassVar[Grid] = {
        "paper": {
            "num_clusters": [2, 4, 8, 12, 16, 20],
            "top_clusters": [1, 2],
            "window": _MT_WINDOWS,
        },
        "paper_mlm": {
            "num_clusters": [2, 4, 6, 8, 10, 12],
            "top_clusters": [1, 2],
            "window": _MLM_WINDOWS,
        },
        "quick": {"num_clusters": [4, 16], "top_clusters": [1, 2]},
    }

    def _check_fit_params(self) -> None:
        super()._check_fit_params()
        for name in ("num_clusters", "runs", "n_init", "max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def _check_predict_params(self) -> None:
        if not 1 <= self.top_clusters <= self.num_clusters:
            raise ValueError(
                f"top_clusters must lie in [1, num_clusters={self.num_clusters}], "
                f"got {self.top_clusters}"
            )
        if self.topk_semantics not in ("intersection", "per_rank"):
            raise ValueError(
                f"topk_semantics must be 'intersection' or 'per_rank', got {self.topk_semantics!r}"
            )

    def _fit_groups(self, train: QKData, layer: int) -> None:
        x = self._train_units(train, layer)  # (H, T, r)
        cents = []
        for run in range(self.runs):
            g = self._generator(layer, 3, run)
            init = "k-means++" if run == 0 else "random"
            cents.append(
                P.kmeans(
                    x, self.num_clusters, g, init=init, n_init=self.n_init, max_iter=self.max_iter
                )
            )
        self.centroids_ = torch.stack(cents, 1)  # (H, m, C, r)

    def _ids(self, x: Tensor) -> Tensor:
        top = _top_clusters(x, self.centroids_, self.top_clusters)  # (B, H, N, m, k)
        m, C = self.centroids_.shape[1], self.centroids_.shape[2]
        # Offset the ids per run so that clusters of different runs never match.
        top = top + C * torch.arange(m, device=top.device).view(1, 1, 1, m, 1)
        return top.flatten(-2)  # (B, H, N, m*k), slots ordered (run, rank)

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        self._check_predict_params()
        qg = self._ids(self._project(q, "q"))
        kg = self._ids(self._project(k, "k"))
        B, H, N, _ = q.shape
        if self.topk_semantics == "per_rank":
            part = Groups(qg, kg, match="slot")
        else:
            # "any" compares every query slot with every key slot; run offsets keep runs apart.
            part = Groups(qg, kg, match="any")
        parts = [part]
        if self.official_forced_diagonal and self.top_clusters > 1:
            parts.append(Band(0, 0))
        return Graph((B, H, N, k.shape[2]), parts)


@register("sparsefinder_blocks")
@dataclass(kw_only=True)
class SparsefinderBlocks(_SparsefinderBase):
    """Sparsefinder on contiguous token blocks: k-means on block vectors, a block layout out.

    Paper: Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022
    (arXiv:2109.12188), the contiguous-blocks variant of the official code. Blocks of
    ``block_size`` tokens are the units: a block vector concatenates its tokens' projected
    vectors (``r·b`` wide; tokens past the length are zeros), a block pair is gold iff some
    token pair in it is gold, the projector is trained with the same loss on blocks, and k-means
    on the query and key block vectors of the training split gives ``num_clusters`` centroids
    per head. Query block and key block are linked iff their ``top_clusters`` nearest centroids
    intersect; the token graph is the :class:`BlockLayout` of the linked blocks.

    Deviations: the official blocks script always builds an MLP projector (bug B11) and several
    of its strategies are broken (B12); this one is the linear projector with k-means only.
    ``window`` and ``global_tokens`` are in tokens like every other method (the reference
    measures the window in blocks). Padding tokens are zeroed in the projected space so they
    never change a block vector. Projection training and its switches are described in
    :class:`SparsefinderDistance`; in a causal layer negatives are key blocks at or before the
    query block.

    Attributes:
        block_size: ``b``, tokens per block.
        num_clusters: centroids per head.
        n_init: k-means starts (best inertia kept).
        max_iter: Lloyd iterations at most.
        top_clusters: nearest centroids per block vector.
    """

    block_size: int = 4
    num_clusters: int = 4
    n_init: int = 10
    max_iter: int = 300
    top_clusters: int = predict_time(1)
    tags: ClassVar[Tags] = Tags(
        requires_fit=True, learned=True, stochastic=True, structure=("blocks",)
    )
    grid: ClassVar[Grid] = {
        "paper": {
            "block_size": [2, 4, 8],
            "num_clusters": [2, 4, 8, 12, 16, 20],
            "top_clusters": [1, 2],
            "window": _MT_WINDOWS,
        },
        "paper_mlm": {
            "block_size": [4, 8, 16, 32, 64],
            "num_clusters": [2, 4, 6, 8, 10, 12],
            "top_clusters": [1, 2],
            "window": _MLM_WINDOWS,
        },
        "quick": {"block_size": [4], "num_clusters": [4], "top_clusters": [1, 2]},
    }

    def _check_fit_params(self) -> None:
        super()._check_fit_params()
        for name in ("block_size", "num_clusters", "n_init", "max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def _check_predict_params(self) -> None:
        if not 1 <= self.top_clusters <= self.num_clusters:
            raise ValueError(
                f"top_clusters must lie in [1, num_clusters={self.num_clusters}], "
                f"got {self.top_clusters}"
            )

    def _projection_key(self) -> tuple:
        return (*super()._projection_key(), ("block_size", self.block_size))

    def _unit_lengths(self, lengths: Tensor, U: int) -> Tensor:
        return (lengths + self.block_size - 1) // self.block_size

    def _units(self, xp: Tensor, lengths: Tensor | None) -> Tensor:
        B, H, N, r = xp.shape
        b = self.block_size
        xp = torch.where(_real(B, N, lengths, xp.device), xp, 0.0)
        pad = (-N) % b
        if pad:
            xp = torch.nn.functional.pad(xp, (0, 0, 0, pad))
        return xp.reshape(B, H, (N + pad) // b, b * r)  # (B, H, nb, b*r)

    def _targets(self, lay: LayerData) -> tuple[Tensor, Tensor, Tensor | None]:
        B, H, N, _ = lay.q.shape
        b = self.block_size
        gold = P.gold_mask(lay.q, lay.k, lengths=lay.lengths, causal=lay.causal, alpha=lay.alpha)
        pad = (-N) % b
        nb = (N + pad) // b
        gold = torch.nn.functional.pad(gold, (0, pad, 0, pad))
        pos = gold.view(B, H, nb, b, nb, b).any(-1).any(-2)  # (B, H, nb, nb)
        blen = self._unit_lengths(lay.lengths, nb)
        causal = lay.causal and not self.official_future_negatives
        allowed = P.valid_pairs(B, nb, nb, blen, causal)
        return pos, allowed, blen

    def _fit_groups(self, train: QKData, layer: int) -> None:
        x = self._train_units(train, layer)  # (H, T, b*r)
        g = self._generator(layer, 3, 0)
        cent = P.kmeans(x, self.num_clusters, g, n_init=self.n_init, max_iter=self.max_iter)
        self.centroids_ = cent.unsqueeze(1)  # (H, 1, C, b*r)

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        self._check_predict_params()
        qb = self._units(self._project(q, "q"), lengths)
        kb = self._units(self._project(k, "k"), lengths)
        qi = _top_clusters(qb, self.centroids_, self.top_clusters).flatten(-2)  # (B, H, nq, k)
        ki = _top_clusters(kb, self.centroids_, self.top_clusters).flatten(-2)  # (B, H, nk, k)
        blocks = (qi.unsqueeze(3).unsqueeze(-1) == ki.unsqueeze(2).unsqueeze(-2)).any(-1).any(-1)
        B, H, N, _ = q.shape
        return Graph((B, H, N, k.shape[2]), [BlockLayout(blocks, self.block_size)])


@dataclass(kw_only=True)
class LearnedSpace(Composable):
    """Mixin for baselines that the official code ran on the learned Sparsefinder projections.

    Attributes:
        space: ``"raw"`` (default) works on the head's own query and key vectors;
            ``"projected"`` first maps them with a Sparsefinder projector (``r = 4``, shared,
            the paper's loss) trained on the train split by ``fit``, as the official code did.
    """

    space: Literal["raw", "projected"] = "raw"

    def _fit_space(self, train: QKData, layer: int) -> None:
        if self.space not in ("raw", "projected"):
            raise ValueError(f"space must be 'raw' or 'projected', got {self.space!r}")
        if self.space == "projected":
            self.projector_ = SparsefinderDistance(seed=self.seed).fit(train, layer)

    def fit(self, train: QKData, layer: int) -> Self:
        """Train the projector when ``space="projected"`` (otherwise nothing to learn)."""
        self._fit_space(train, layer)
        return self

    def _to_space(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        if self.space == "raw":
            return q, k
        if not hasattr(self, "projector_"):
            raise RuntimeError(f"{self.id} must be fitted first: call .fit(train, layer)")
        return self.projector_._project(q, "q"), self.projector_._project(k, "k")
