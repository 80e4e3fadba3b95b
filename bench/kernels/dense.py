"""The dense reference: scores of all pairs, masked to the graph, normalised, times ``v``.

:func:`dense_attention` checks its inputs; :func:`masked_attention` is its unchecked loop, for
callers that have checked them already (:func:`~sparsebench.bench.kernels.execute`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparsebench.methods import (
    Graph,
    attention_logits,
    attention_probs,
    check_alpha,
    check_normalizer,
    check_qk,
    to_scoring,
)

__all__ = ["dense_attention", "masked_attention"]


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    *,
    normalizer: str = "entmax",
    alpha: float = 1.5,
) -> Tensor:
    """Attention over every pair, masked to ``graph``, a slab of query rows at a time.

    Memory stays bounded by one slab of ``(B, H, rows, M)`` scores. Float16 and bfloat16
    inputs are computed in float32 (their scores overflow in half precision); the output has
    ``v``'s dtype.

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values ``(B, H, M, Dv)``.
        graph: the allowed edges (its lengths and causality apply).
        normalizer: ``"entmax"`` or ``"softmax"``.
        alpha: entmax α, finite and > 1.

    Returns:
        ``(B, H, N, Dv)``; rows of queries with no allowed key are zero.

    Raises:
        ValueError: for invalid tensors, a graph of another shape, an unknown normalizer or an
            α that is not finite and > 1.
    """
    check_normalizer(normalizer)
    alpha = check_alpha(alpha)
    if not isinstance(graph, Graph):
        raise ValueError(f"graph must be a sparsebench Graph, got {type(graph).__name__}")
    check_qk(q, k, v=v, lengths=graph.lengths, causal=graph.causal)
    if graph.shape != (*q.shape[:3], k.shape[2]):
        raise ValueError(f"graph shape {graph.shape} does not match q/k {tuple(q.shape)}")
    out = masked_attention(to_scoring(q), to_scoring(k), to_scoring(v), graph, normalizer, alpha)
    return out.to(v.dtype)


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, graph: Graph, normalizer: str, alpha: float
) -> Tensor:
    """The loop of :func:`dense_attention` without its checks (inputs already validated)."""
    B, H, N, _ = q.shape
    out = torch.zeros(B, H, N, v.shape[-1], dtype=v.dtype, device=v.device)
    for s, e in graph.row_chunks():
        z = attention_logits(q[:, :, s:e], k)  # (B, H, c, M)
        z = z.masked_fill(~graph.slab(s, e).to(z.device), float("-inf"))
        out[:, :, s:e] = attention_probs(z, normalizer, alpha) @ v
    return out
