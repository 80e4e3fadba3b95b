"""α-entmax restricted to a block layout, by FlexAttention, without an N × M score matrix.

The math. Over the allowed keys of one query row, α-entmax of the scores ``s_j = q·k_j/√d`` is
``p_j = [(α−1)·s_j − τ]_+^γ`` with ``γ = 1/(α−1)`` and the threshold ``τ`` such that
``Σ_j p_j = 1``. Shift by ``m``, an upper bound of the row's largest score:
``x_j = (α−1)(s_j − m) ≤ 0`` and ``t = τ − (α−1)m``, so that ``w_j = relu(x_j − t)`` and
``p_j = w_j^γ``. For any ``t``, ``w_j^γ / Σ w^γ`` is the softmax of ``γ·log w_j`` (``log 0 = −∞``);
at the threshold the normaliser is 1, so **with ``t`` known, α-entmax is one FlexAttention call**
whose ``score_mod`` is ``γ·log(relu((α−1)(s − m) − t))`` (for α = 1.5: ``2·log(relu(s/2 − τ))``),
over the same ``BlockMask`` as the softmax flex path. No block is visited that the layout does
not keep, and a query row with no allowed key outputs zeros.

The threshold. Write ``F_e(t) = Σ_j w_j^e``. A FlexAttention pass with the score_mod
``e·log w`` returns, per row, the log-sum-exp of the modified scores, which is ``log F_e(t)``;
the output of such a pass is not needed, so it carries a 16-wide zero value tensor. Every
threshold pass uses one score_mod, ``lin·s + e·log(relu((α−1)(s − m) − t))`` with per-row
tensors, so they share one compiled kernel. The passes:

1. one pass with the score_mod ``E·s`` (``E`` = :data:`MAX_SHARPNESS`): its log-sum-exp over
   ``E`` bounds the row maximum, ``max ≤ LSE/E ≤ max + log(M)/E``; that gives ``m`` (with a
   float32 rounding margin) and a left end ``t_lo = −1 − (α−1)·(log(M)/E + margin)`` with
   ``w_max(t_lo) ≥ 1``, so ``F_γ(t_lo) ≥ 1``; and ``t = 0`` has ``F_γ = 0``. A row with no
   allowed key has ``LSE = −∞``.
2. ``φ(t) = F_γ(t)^{1/γ} = ‖relu(x − t)‖_γ`` is decreasing and, for 1 < α ≤ 2 (γ ≥ 1), convex
   in ``t`` (a monotone norm of convex functions), with ``φ(t*) = 1`` at the threshold. One
   Newton step from ``t_lo`` (``φ' = −F_{γ−1}/φ^{γ−1}``: one more pass, score_mod
   ``(γ−1)·log w``), then secant steps through the last two points, one pass each. On a convex
   decreasing function both stay left of the root and increase to it, the secant with order
   about 1.6. Every row keeps a bracket (``φ ≥ 1`` on the left, ``φ < 1`` on the right); a step
   that leaves it, or is not finite, bisects instead, so α > 2 (where ``φ`` need not be convex)
   converges too, only slower.
3. A row stops when ``|φ(t) − 1| ≤ tol`` (1e-6 for float32 inputs, 1e-3 for half precision) or
   its bracket is a few float32 steps wide. The output's error is about ``2·|φ − 1|`` relative:
   from ``p ∝ w^γ``, a threshold error ``δ`` moves the output by ``2δ·F_1·(o − ō)`` (α = 1.5)
   and ``|φ − 1| ≈ δ·F_1``. The search is shared by all rows of the call; rows that have
   stopped keep their threshold.

Measured on CPU (float32, N = 1k and 2k, 8 heads): 8 threshold passes, the maximum's included,
on the synthetic generator's attention (a few keys in each support), 9–11 on random q and k
(tens to hundreds of keys); then the output pass.

Why FlexAttention rather than a Triton kernel of our own: the kernels are PyTorch's, compiled
by Inductor for CUDA and for CPU, so no Triton version is pinned and the same ``score_mod``
that runs on the GPU is compiled on CPU machines, where CI checks it against the dense
reference; the block layout is the one the softmax flex path and ``Graph.to_block_mask`` use.
The cost is one pass per threshold step where a fused kernel would iterate in SRAM. torch 2.13
refuses ``return_lse`` in a CPU-compiled FlexAttention, so on CPU the threshold passes run
FlexAttention eagerly (it then materialises the scores of the whole call: this path is for
CUDA; on CPU it is for checking) and only the output pass is compiled. On CUDA every pass is
compiled and half-precision inputs run as they are.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .flex import compiled_flex, empty_rows, flex_inputs, kernel_options, layout_block_mask
from .plan import BlockPlan

__all__ = ["MAX_SHARPNESS", "PASS_VALUE_DIM", "flex_entmax_attention", "threshold_tolerance"]

#: Inverse temperature of the pass that bounds each row's largest score.
MAX_SHARPNESS = 1e4
#: Width of the (zero) value tensor of the threshold passes, whose output is discarded.
PASS_VALUE_DIM = 16
#: Bracket width (in ``t``, which lies in about ``[-1, 0]``) at which a row stops.
_BRACKET = 8 * torch.finfo(torch.float32).eps


def threshold_tolerance(dtype: torch.dtype) -> float:
    """The ``|φ(t) − 1|`` at which a row's threshold search stops, for inputs of ``dtype``."""
    return 1e-3 if dtype in (torch.float16, torch.bfloat16) else 1e-6


def _score_mod(a: Tensor, m: Tensor, t: Tensor, e: Tensor, lin: Tensor) -> Callable:
    """The score_mod ``lin·s + e·log(relu(a·(s − m) − t))`` (``−∞`` where the bracket is ≤ 0).

    ``a`` (α − 1), ``m``, ``t``, ``e`` and ``lin`` are per row ``(B, H, N)``, so every pass of
    one shape (the maximum pass: ``lin = E``, ``e = 0``, ``t`` far below; the threshold passes:
    ``lin = 0``), at any α, runs one compiled kernel; the output pass, with the real values,
    compiles one more.
    """

    def mod(score, b, h, qi, ki):
        w = a[b, h, qi] * (score - m[b, h, qi]) - t[b, h, qi]
        power = torch.where(w > 0, e[b, h, qi] * torch.log(w), -math.inf)
        return lin[b, h, qi] * score + power

    return mod


class _Passes:
    """FlexAttention passes that return ``log F`` per row (the log-sum-exp of a score_mod)."""

    def __init__(self, q: Tensor, k: Tensor, block_mask, alpha: float) -> None:
        from torch.nn.attention.flex_attention import flex_attention

        B, H, N, D = q.shape
        self.q, self.k, self.block_mask, self.scale = q, k, block_mask, D**-0.5
        self.zero = torch.zeros(B, H, N, dtype=torch.float32, device=q.device)
        self.a = torch.full_like(self.zero, alpha - 1.0)
        self.v = q.new_zeros(B, H, k.shape[2], PASS_VALUE_DIM)
        # torch 2.13 compiles FlexAttention with return_lse on CUDA only.
        self.run = compiled_flex() if q.is_cuda else flex_attention
        self.count = 0

    def log_max(self) -> Tensor:
        """``LSE(E·s)/E`` per row: ``max ≤ it ≤ max + log(M)/E`` (``−∞``: no allowed key)."""
        far = torch.full_like(self.zero, -1e38)  # w > 0 for every score, and e·log w = 0
        lin = torch.full_like(self.zero, MAX_SHARPNESS)
        return self.lse(_score_mod(self.a, self.zero, far, self.zero, lin)) / MAX_SHARPNESS

    def log_f(self, m: Tensor, t: Tensor, e: float) -> Tensor:
        """``log F_e(t)``: the log-sum-exp of ``e·log(relu((α−1)(s − m) − t))`` per row."""
        return self.lse(_score_mod(self.a, m, t, torch.full_like(t, e), self.zero))

    def lse(self, score_mod: Callable) -> Tensor:
        from torch.nn.attention.flex_attention import AuxRequest

        with warnings.catch_warnings():  # eager on CPU is deliberate (module docstring)
            warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
            _, aux = self.run(
                self.q,
                self.k,
                self.v,
                score_mod=score_mod,
                block_mask=self.block_mask,
                scale=self.scale,
                return_aux=AuxRequest(lse=True),
                kernel_options=kernel_options(self.q),
            )
        self.count += 1
        return aux.lse.float()


def _row_threshold(
    passes: _Passes, alpha: float, m: Tensor, t_lo: Tensor, done: Tensor, tol: float, limit: int
) -> Tensor:
    """The shifted threshold ``t`` per row (module docstring, steps 2 and 3).

    One loop of safeguarded Newton-then-secant steps over every row at once; the steps stay
    together because each one's bracket update feeds the next proposal.
    """
    g = 1.0 / (alpha - 1.0)

    def log_f(t: Tensor, e: float) -> Tensor:
        return passes.log_f(m, t, e)

    lse_lo = log_f(t_lo, g)
    phi_lo = torch.exp(lse_lo / g)
    lo, hi = t_lo.clone(), torch.zeros_like(t_lo)
    # Newton from the left end: t1 = t0 + (φ − 1)·φ^{γ−1} / F_{γ−1}.
    step = (phi_lo - 1) * torch.exp((g - 1) / g * lse_lo - log_f(t_lo, g - 1))
    t = _inside(t_lo + step, lo, hi)
    prev, phi_prev = t_lo, phi_lo
    while passes.count < limit:
        phi = torch.exp(log_f(t, g) / g)
        left = phi >= 1
        lo = torch.where(left & ~done, t, lo)
        hi = torch.where(left | done, hi, t)
        done = done | ((phi - 1).abs() <= tol) | (hi - lo <= _BRACKET)
        if bool(done.all()):
            break
        secant = t - (phi - 1) * (t - prev) / (phi - phi_prev)
        prev, phi_prev = t, phi
        t = torch.where(done, t, _inside(secant, lo, hi))
    return t


def _inside(t: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``t`` where it lies strictly inside ``(lo, hi)`` and is finite, else the midpoint."""
    ok = torch.isfinite(t) & (t > lo) & (t < hi)
    return torch.where(ok, t, (lo + hi) / 2)


def flex_entmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    plan: BlockPlan,
    alpha: float = 1.5,
    *,
    tol: float | None = None,
    max_passes: int = 48,
    stats: dict[str, Any] | None = None,
) -> Tensor:
    """α-entmax attention of ``q`` over ``k``/``v`` restricted to the block layout ``plan``.

    Exact α-entmax over each row's allowed keys (up to the threshold tolerance), computed by
    FlexAttention passes over the layout's kept blocks (module docstring). Inputs are assumed
    checked (:func:`~sparsebench.bench.kernels.execute` checks them).

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values ``(B, H, M, Dv)``.
        plan: the graph's block layout (:func:`~sparsebench.bench.kernels.block_plan`).
        alpha: entmax α, finite and > 1.
        tol: the ``|φ − 1|`` at which a row's threshold search stops (default by dtype:
            :func:`threshold_tolerance`).
        max_passes: most threshold passes (the search stops there whatever its state).
        stats: if given, receives ``{"threshold_passes": n}``.

    Returns:
        ``(B, H, N, Dv)`` in ``v``'s dtype; rows of queries with no allowed key are zero.
    """
    dtype = v.dtype
    q, k, v = flex_inputs(q, k, v)
    block_mask = layout_block_mask(plan, q, k)
    passes = _Passes(q, k, block_mask, alpha)
    top = passes.log_max()  # (B, H, N): max <= top <= max + log(M)/E
    empty = torch.isneginf(top)
    top = torch.where(empty, 0.0, top)
    slack = math.log(k.shape[2]) / MAX_SHARPNESS + 2e-6 * (1 + top.abs())
    m = top + 1e-6 * (1 + top.abs())  # an upper bound of the row max, float32 rounding included
    t_lo = -1 - (alpha - 1) * slack
    tol = threshold_tolerance(dtype) if tol is None else tol
    t = _row_threshold(passes, alpha, m, t_lo, empty.clone(), tol, max_passes + 1)
    if stats is not None:
        stats["threshold_passes"] = passes.count
    mod = _score_mod(passes.a, m, t, torch.full_like(t, 1.0 / (alpha - 1.0)), passes.zero)
    out = compiled_flex()(
        q,
        k,
        v,
        score_mod=mod,
        block_mask=block_mask,
        scale=passes.scale,
        kernel_options=kernel_options(q),
    )
    rows = empty_rows(plan, q.shape[2], out.device)
    zero = empty if rows is None else empty | rows
    return out.masked_fill(zero.unsqueeze(-1), 0.0).to(dtype)
