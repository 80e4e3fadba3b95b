"""The flex path (softmax only): the block layout fed to FlexAttention.

The layout becomes a ``BlockMask.from_kv_blocks`` (partial and full key blocks per query
block); FlexAttention is compiled once per process.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from .plan import BlockPlan

__all__ = ["flex_attention"]


@cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention as flex

    return torch.compile(flex, dynamic=False)


def _kv_layout(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per query block, the number of true key blocks and their indices first."""
    num = mask.sum(-1).to(torch.int32)
    idx = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return num.contiguous(), idx.contiguous()


def flex_attention(q, k, v, plan: BlockPlan, compiled: bool = True) -> Tensor:
    """Softmax attention of ``q`` over ``k``/``v`` on the block layout ``plan``.

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values ``(B, H, M, Dv)``.
        plan: the graph's block layout.
        compiled: run the compiled kernel (eager FlexAttention otherwise, e.g. on CPU tests).

    Returns:
        ``(B, H, N, Dv)``; rows of queries with no allowed key are zero.
    """
    from torch.nn.attention.flex_attention import BlockMask
    from torch.nn.attention.flex_attention import flex_attention as flex

    b = plan.block_size
    B, H, N, _ = q.shape
    M = k.shape[2]
    partial = plan.kept & ~plan.full

    kv_num, kv_idx = _kv_layout(partial)
    full_num, full_idx = _kv_layout(plan.full)
    partial_id = plan.partial_id.to(q.device)
    partial_masks = plan.partial_masks.to(q.device)

    def mask_mod(bi, hi, qi, ki):
        p = partial_id[bi, hi, qi // b, ki // b]
        return partial_masks[p.clamp(min=0), qi % b, ki % b] & (p >= 0)

    block_mask = BlockMask.from_kv_blocks(
        kv_num.to(q.device),
        kv_idx.to(q.device),
        full_num.to(q.device),
        full_idx.clone().to(q.device),
        BLOCK_SIZE=b,
        mask_mod=mask_mod,
        seq_lengths=(N, M),
    )
    fn = _compiled_flex() if compiled else flex
    out = fn(q, k, v, block_mask=block_mask, scale=q.shape[-1] ** -0.5)
    # Rows with no allowed key: flex returns zeros there already; make it explicit.
    empty = ~plan.kept.any(-1)  # (B, H, Qb) blocks with nothing at all
    if empty.any():
        rows = empty.repeat_interleave(b, dim=-1)[..., :N].to(out.device)
        out = out.masked_fill(rows.unsqueeze(-1), 0.0)
    return out
