"""The dense baselines of the speed harness: one call per name of :data:`~.speed_cases.DENSE`.

Each baseline attends over every pair (causal when the case is), with no graph: SDPA (the
backend torch picks, or pinned to flash or memory-efficient with
``torch.nn.attention.sdpa_kernel``), xformers ``memory_efficient_attention``, AdaSplash's
kernels (its dispatcher, its block-mask kernel, its kernel without block mask), the entmax
package over full score matrices (``entmax15``, ``entmax_bisect``), and the exact α-entmax of
the dense execution path. Packages are imported when a baseline is built, never before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["dense_call", "dense_entmax15", "full_scores_entmax"]


def full_scores_entmax(
    q: Tensor,
    k: Tensor,
    v: Tensor | None = None,
    *,
    alpha: float = 1.5,
    top: int | None = None,
    per_head: bool = False,
    causal: bool = False,
    bisect: bool = False,
) -> Tensor:
    """The entmax package over the full score matrix ``q·k/√d`` (float32 scores).

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values; when given, the attention output ``probs @ v`` is returned.
        alpha: α of ``entmax_bisect`` (``entmax15`` is α = 1.5).
        top: ``entmax15``'s ``k`` (size of its first partial sort); ``None`` sorts whole rows.
        per_head: one head after another (the scores of one head at a time in memory).
        causal: mask the keys after each query.
        bisect: ``entmax_bisect`` instead of ``entmax15``.

    Returns:
        The probabilities ``(B, H, N, M)``, or the output ``(B, H, N, Dv)`` in ``v``'s dtype.
    """
    from entmax import entmax15, entmax_bisect

    from sparsebench.methods import attention_logits

    def one(qh: Tensor, kh: Tensor, vh: Tensor | None) -> Tensor:
        z = attention_logits(qh.float(), kh.float())
        if causal:
            n, m = z.shape[-2:]
            later = torch.ones(n, m, dtype=torch.bool, device=z.device).triu(m - n + 1)
            z = z.masked_fill(later, float("-inf"))
        p = entmax_bisect(z, alpha=alpha, dim=-1) if bisect else entmax15(z, dim=-1, k=top)
        return p if vh is None else (p @ vh.float()).to(vh.dtype)

    if not per_head:
        return one(q, k, v)
    heads = range(q.shape[1])
    return torch.cat(
        [
            one(q[:, h : h + 1], k[:, h : h + 1], None if v is None else v[:, h : h + 1])
            for h in heads
        ],
        dim=1,
    )


def dense_entmax15(
    q: Tensor, k: Tensor, v: Tensor | None = None, *, top: int | None = None, per_head=False
) -> Tensor:
    """``entmax.entmax15`` over the full score matrix ``q·k/√d``: the dense baseline.

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values; when given, the attention output ``probs @ v`` is returned.
        top: the package's ``k`` (size of its first partial sort); ``None`` sorts whole rows.
        per_head: one head after another (the scores of one head at a time in memory).

    Returns:
        The probabilities ``(B, H, N, M)``, or the output ``(B, H, N, Dv)`` with ``v``.
    """
    return full_scores_entmax(q, k, v, top=top, per_head=per_head)


def _sdpa(q, k, v, causal: bool, backend: str | None) -> Callable[[], Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    if backend is None:
        return lambda: sdpa(q, k, v, is_causal=causal)
    pinned = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}

    def call() -> Tensor:
        with sdpa_kernel(pinned[backend]):
            return sdpa(q, k, v, is_causal=causal)

    return call


def _xformers(q, k, v, causal: bool) -> Callable[[], Tensor]:
    logging.getLogger("xformers").setLevel(logging.ERROR)
    import xformers.ops as xops
    from xformers.ops.fmha.attn_bias import LowerTriangularMask

    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # (B, N, H, D)
    bias = LowerTriangularMask() if causal else None
    return lambda: xops.memory_efficient_attention(qt, kt, vt, attn_bias=bias)


def _adasplash(name: str, q, k, v, causal: bool, alpha: float) -> Callable[[], Tensor]:
    import adasplash

    q, k, v = (x.contiguous() for x in (q, k, v))
    n = q.shape[2]
    # Without varlen the kernels want a power-of-two length; varlen = n covers the others.
    varlen = None if n & (n - 1) == 0 else torch.full((q.shape[0],), n, device=q.device)
    kernel = {
        "adasplash": adasplash.adasplash,
        "adasplash_block_mask": adasplash.adasplash_v1,
        "adasplash_no_block_mask": adasplash.adasplash_no_block_mask,
    }[name]
    return lambda: kernel(q, k, v, alpha=alpha, is_causal=causal, varlen=varlen)


def dense_call(name: str, q: Tensor, k: Tensor, v: Tensor, case: dict[str, Any]) -> Callable:
    """The call of the dense baseline ``name`` on ``q``, ``k``, ``v`` for a checked ``case``."""
    causal, alpha = bool(case.get("causal", False)), float(case.get("alpha", 1.5))
    if name in ("sdpa", "sdpa_flash", "sdpa_efficient"):
        return _sdpa(q, k, v, causal, name.partition("_")[2] or None)
    if name == "xformers":
        return _xformers(q, k, v, causal)
    if name.startswith("adasplash"):
        return _adasplash(name, q, k, v, causal, alpha)
    if name == "dense_entmax":
        from sparsebench.bench.kernels import execute
        from sparsebench.methods import Band, Graph

        _, heads, n, _ = q.shape
        full = Graph((1, heads, n, n), [Band(-n, n)], causal=causal)
        return lambda: execute(q, k, v, full, path="dense", alpha=alpha)
    bisect = name == "entmax_bisect_full"
    return lambda: full_scores_entmax(
        q, k, v, alpha=alpha, per_head=True, causal=causal, bisect=bisect
    )
