"""Score scale, normalisers and the batched attention call shared by the block and grouped paths.

1.5-entmax runs in place on the score buffer: the threshold comes from the top entries of each
row (:func:`sparsebench.methods.gold.entmax15_threshold`, the routine the gold graph uses), so
the result equals ``entmax15`` over the allowed entries without sorting whole rows.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsebench.methods import attention_probs
from sparsebench.methods.gold import entmax15_threshold

__all__ = ["Normalizer", "attend", "entmax15_inplace", "normalize_", "score_scale"]

Normalizer = Literal["entmax", "softmax"]


def score_scale(head_dim: int, normalizer: str, alpha: float) -> float:
    """Scale of ``q·k`` handed to :func:`normalize_` (1.5-entmax wants the scores halved)."""
    return head_dim**-0.5 * (0.5 if normalizer == "entmax" and alpha == 1.5 else 1.0)


def entmax15_inplace(x: Tensor, k: int = 64) -> Tensor:
    """In place: 1.5-entmax over the last dim of ``x`` = ``(z - max z) / 2`` (``-inf`` = no key).

    The threshold comes from the ``k`` largest entries (rows whose support fills them are redone
    with a wider prefix); the arithmetic is that of the sort-based algorithm, so the result is
    the same as ``entmax15`` over the allowed entries. Rows with no allowed key come out NaN.
    """
    width = x.shape[-1]
    flat = x.view(-1, width)
    tau = torch.empty(flat.shape[0], 1, dtype=x.dtype, device=x.device)
    for solved in entmax15_threshold(flat, k):
        if solved.rows is None:
            tau = solved.tau
        else:
            tau[solved.rows] = solved.tau
    flat.sub_(tau).clamp_(min=0).square_()
    return x


def normalize_(scores: Tensor, normalizer: str, alpha: float) -> Tensor:
    """Attention weights from scores scaled by :func:`score_scale` (``-inf`` = no key).

    In place where it can; rows with no allowed key are left to the caller.
    """
    if normalizer == "entmax" and alpha == 1.5:
        floor = torch.finfo(scores.dtype).min
        shifted = scores.sub_(scores.amax(-1, keepdim=True).clamp(min=floor))
        return entmax15_inplace(shifted)
    return attention_probs(scores, normalizer, alpha)


def attend(q, k, v, bias, normalizer, alpha, scale, scores=None) -> Tensor:
    """Batched attention of ``q`` ``(g, m, D)`` over ``k``/``v`` ``(g, s, ·)``.

    ``bias`` is additive (``-inf`` = no key), broadcastable to ``(g, m, s)``; ``q·k`` is
    scaled by ``scale`` (:func:`score_scale`). Softmax runs the fused SDPA kernel; α-entmax
    writes the scores into ``scores`` (``bias`` itself to work in place, ``None`` for a new
    tensor) and normalises them there. Rows with no allowed key are left to the caller.
    """
    if normalizer == "softmax":
        return F.scaled_dot_product_attention(
            q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), attn_mask=bias.unsqueeze(1), scale=scale
        ).squeeze(1)
    if scores is bias:
        z = bias.baddbmm_(q, k.transpose(1, 2), alpha=scale)
    else:
        z = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale, out=scores)
    return torch.bmm(normalize_(z, normalizer, alpha), v)
