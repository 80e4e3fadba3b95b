"""Learned projections of queries and keys: Sparsefinder's projector and the learned space.

Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022 (arXiv:2109.12188).
:class:`LearnedProjection` trains, per layer and head, a linear map ``d -> r`` of the queries and
keys so that gold (α-entmax support) pairs land close and other pairs far apart; the Sparsefinder
variants (:mod:`.sparsefinder`, :mod:`.sparsefinder_kmeans`) group in that space, and
:class:`LearnedSpace` lets the baselines (Reformer, Routing) run in it. Trained projectors are
cached per training split, so the variants and their configurations train one projector.

The helpers are plain torch, run on the device of their inputs and draw randomness only from
the ``torch.Generator`` they are given.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Self

import torch
from torch import Tensor

from ._base import Composable, param
from ._masks import real_tokens, valid_pairs

if TYPE_CHECKING:
    from sparsebench.datasets import LayerData, QKData

__all__ = [
    "LearnedProjection",
    "LearnedSpace",
    "clear_projection_cache",
    "gold_mask",
    "hinge_loss",
    "init_projection",
    "project",
    "sample_negatives",
    "sq_dists",
]

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


def clear_projection_cache() -> None:
    """Forget every trained projector (the next ``fit`` trains again)."""
    _PROJECTIONS.clear()


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
    real = real_tokens(lengths, B, N, qp.device).view(B, 1, N)
    per_seq = torch.where(real, per_query, zero).sum(-1) / L.clamp(min=1).view(B, 1)
    return per_seq.mean()


@dataclass(kw_only=True)
class LearnedProjection(Composable):
    """The learned projector shared by the Sparsefinder variants (see the module docstring).

    Fitting trains the projector (or takes it from the cache); variants group in the projected
    space through the hooks ``_units``, ``_targets`` and ``_fit_groups``; parameters are checked
    by their declared bounds (:meth:`Method.validate`) before fitting.

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

    proj_dim: int = param(4, min=1)
    share_projectors: bool = True
    margin: float = param(1.0, min=0)
    lr: float = param(0.01, above=0)
    weight_decay: float = param(0.0, min=0)
    epochs: int = param(1, min=0)
    batch_size: int = param(16, min=1)
    grad_clip: float = param(1.0, above=0)
    official_init: bool = False
    official_double_update: bool = False
    official_future_negatives: bool = False

    # -- projection --------------------------------------------------------------------------
    def _project(self, x: Tensor, which: Literal["q", "k"]) -> Tensor:
        w, b = (self.w_q_, self.b_q_) if which == "q" else (self.w_k_, self.b_k_)
        H, d, _ = w.shape
        if x.shape[1] != H or x.shape[3] != d:
            raise ValueError(
                f"{self.name or 'the projector'} was fitted on {H} heads of size {d}, got input "
                f"{tuple(x.shape)}; predict on the layer it was fitted on"
            )
        return project(x.float(), w.to(x.device), b.to(x.device))

    def _units(self, xp: Tensor, lengths: Tensor | None) -> Tensor:
        """The vectors the loss and grouping work on (tokens; blocks override this)."""
        return xp

    def _targets(self, lay: LayerData) -> tuple[Tensor, Tensor, Tensor | None]:
        """Positives, allowed negatives and unit lengths of one training batch."""
        B, _, N, _ = lay.q.shape
        pos = gold_mask(lay.q, lay.k, lengths=lay.lengths, causal=lay.causal, alpha=lay.alpha)
        causal = lay.causal and not self.official_future_negatives
        allowed = valid_pairs(B, N, N, lay.lengths, causal)
        return pos, allowed, lay.lengths

    def _batch_loss(self, lay: LayerData, params: list[Tensor], gen: torch.Generator) -> Tensor:
        wq, bq, wk, bk = params if len(params) == 4 else params * 2
        pos, allowed, ulen = self._targets(lay)
        uq = self._units(project(lay.q.float(), wq, bq), lay.lengths)
        uk = self._units(project(lay.k.float(), wk, bk), lay.lengths)
        neg = sample_negatives(pos, allowed, gen)
        return hinge_loss(uq, uk, pos, neg, ulen, self.margin)

    def fit(self, train: QKData, layer: int) -> Self:
        """Train the projector of one layer on the gold graphs of ``train``, then group.

        Args:
            train: the training split.
            layer: which layer.

        Returns:
            ``self``, with ``w_q_``, ``b_q_``, ``w_k_``, ``b_k_`` (and the variant's state) set.
        """
        self.validate()
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
        wq, bq = init_projection(H, d, r, g, official=self.official_init)
        params = [wq, bq]
        if not self.share_projectors:
            params += list(init_projection(H, d, r, g, official=self.official_init))
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

    def _train_units(self, train: QKData, layer: int) -> Tensor:
        """Projected non-padding query and key units of the training split, ``(H, T, width)``."""
        chunks = []
        with torch.no_grad():
            for lay in train.batches(layer, 64):
                for x, which in ((lay.q, "q"), (lay.k, "k")):
                    u = self._units(self._project(x, which), lay.lengths)  # (B, H, U, w)
                    ulen = self._unit_lengths(lay.lengths, u.shape[2])
                    real = real_tokens(ulen, u.shape[0], u.shape[2])  # (B, U)
                    chunks.append(u.transpose(0, 1)[:, real])  # (H, real units, w)
        return torch.cat(chunks, 1)

    def _unit_lengths(self, lengths: Tensor, U: int) -> Tensor:
        return lengths


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
        self.validate()
        if self.space == "projected":
            self.projector_ = LearnedProjection(seed=self.seed).fit(train, layer)

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
