"""Fast exact reductions of bool attention masks: edge counts and kernel-block occupancy."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["block_occupancy", "count_true"]


def count_true(mask: Tensor, lead: int) -> Tensor:
    """``True`` entries of a bool tensor per index of its first ``lead`` dims (int32).

    The bytes are summed four at a time as int32 words, 127 words per group so that no byte
    lane of a sum overflows (and no word sum reaches the sign bit), then the lanes are added:
    the exact count, several times faster than summing the bytes one by one.
    """
    shape = mask.shape[:lead]
    if mask.numel() == 0:
        return torch.zeros(shape, dtype=torch.int32, device=mask.device)
    flat = mask.reshape(math.prod(shape), -1).view(torch.uint8)
    group = 4 * 127
    pad = (-flat.shape[1]) % group
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    flat = flat.contiguous()
    words = flat.view(torch.int32).view(flat.shape[0], -1, 127).sum(-1, dtype=torch.int32)
    return words.view(torch.uint8).view(flat.shape[0], -1).sum(-1, dtype=torch.int32).view(shape)


def block_occupancy(mask: Tensor, bs: int) -> Tensor:
    """Which (bs x bs) blocks of a row slab hold an edge: (B, H, c/bs, ceil(M/bs)).

    Where ``bs`` is a multiple of 8, rows are read eight bytes at a time (as int64 words).
    """
    B, H, c, M = mask.shape
    pad_r, pad_c = (-c) % bs, (-M) % bs
    m = mask.view(torch.uint8)
    if pad_r or pad_c:
        m = torch.nn.functional.pad(m, (0, pad_c, 0, pad_r))
    elif not m.is_contiguous():
        m = m.contiguous()
    rows, cols = (c + pad_r) // bs, (M + pad_c) // bs
    if bs % 8 == 0:
        return m.view(torch.int64).view(B, H, rows, bs, cols, bs // 8).amax(dim=(-1, -3)) != 0
    return m.view(B, H, rows, bs, cols, bs).amax(dim=(-1, -3)) > 0
