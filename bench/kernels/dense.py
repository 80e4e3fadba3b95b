"""The dense reference: scores of all pairs, masked to the graph, normalised, times ``v``."""

from __future__ import annotations

import torch
from torch import Tensor

from sparsebench.methods import Graph, attention_logits, attention_probs

__all__ = ["dense_attention"]


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

    Memory stays bounded by one slab of ``(B, H, rows, M)`` scores.

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values ``(B, H, M, Dv)``.
        graph: the allowed edges (its lengths and causality apply).
        normalizer: ``"entmax"`` or ``"softmax"``.
        alpha: entmax α.

    Returns:
        ``(B, H, N, Dv)``; rows of queries with no allowed key are zero.
    """
    B, H, N, _ = q.shape
    out = torch.zeros(B, H, N, v.shape[-1], dtype=v.dtype, device=v.device)
    for s, e in graph.row_chunks():
        z = attention_logits(q[:, :, s:e], k)  # (B, H, c, M)
        z = z.masked_fill(~graph.slab(s, e).to(z.device), float("-inf"))
        out[:, :, s:e] = attention_probs(z, normalizer, alpha) @ v
    return out
