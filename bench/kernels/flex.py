"""The flex path: the block layout fed to FlexAttention (softmax; α-entmax in :mod:`.flex_entmax`).

The layout becomes a ``BlockMask.from_kv_blocks`` (partial and full key blocks per query
block; :func:`sparsebench.methods.layout.flex_block_mask`, the same as
``Graph.to_block_mask``); FlexAttention is compiled once per process.

Precision: on CUDA, half-precision inputs run as they are (FlexAttention accumulates scores and
the normaliser in float32 and never stores a score matrix, so nothing overflows); on CPU every
input is computed in float32, as the other paths do.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from sparsebench.methods import to_scoring
from sparsebench.methods.layout import flex_block_mask

from .plan import BlockPlan

__all__ = [
    "RECOMPILE_LIMIT",
    "compiled_flex",
    "empty_rows",
    "flex_attention",
    "flex_inputs",
    "kernel_options",
    "layout_block_mask",
]


#: Compiled variants of FlexAttention one process may hold: one per shape, block size and
#: score_mod (the entmax path uses four per shape). Past dynamo's default of 8 it would fall
#: back to eager FlexAttention, which materialises every score.
RECOMPILE_LIMIT = 256


@cache
def compiled_flex():
    """``torch.compile(flex_attention)``, built once per process (shapes are static)."""
    import torch._dynamo.config as dynamo_config
    from torch.nn.attention.flex_attention import flex_attention as flex

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    dynamo_config.accumulated_recompile_limit = max(
        dynamo_config.accumulated_recompile_limit, RECOMPILE_LIMIT
    )
    return torch.compile(flex, dynamic=False)


#: Tiles of the CUDA kernels. The default 128 x 128 tiles overflow an H200's shared memory
#: (227 KiB) once the mask lookup's index tiles are added; 64 x 64 tiles fit at any dtype.
CUDA_KERNEL_OPTIONS = {"BLOCK_M": 64, "BLOCK_N": 64}


def kernel_options(q: Tensor) -> dict | None:
    """FlexAttention's ``kernel_options`` for inputs like ``q`` (CUDA tiles; none on CPU)."""
    return dict(CUDA_KERNEL_OPTIONS) if q.is_cuda else None


def flex_inputs(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The tensors as the flex paths compute them: as given on CUDA, upcast from half on CPU."""
    if tensors[0].is_cuda:
        return tensors
    return tuple(to_scoring(t) for t in tensors)


def layout_block_mask(plan: BlockPlan, q: Tensor, k: Tensor):
    """The FlexAttention ``BlockMask`` of ``plan`` for ``q`` and ``k``, on their device."""
    B, H, N, _ = q.shape
    masks = plan.partial_masks
    P, b = masks.shape[0], plan.block_size
    # The count of masks is padded to a power of two (at least 64, two more are appended by
    # flex_block_mask) so that layouts of one shape share a compiled kernel.
    spare = max(64, 1 << P.bit_length()) - P
    masks = torch.cat([masks, masks.new_zeros(spare, b, b)])
    layout = (plan.kept, plan.full, plan.partial_id, masks)
    return flex_block_mask(layout, b, (B, H, N, k.shape[2]), q.device)


def empty_rows(plan: BlockPlan, n: int, device) -> Tensor | None:
    """``(B, H, n)`` bool, the query rows whose query block keeps no key block; ``None`` if none.

    Rows inside a kept query block that have no allowed key of their own come out of
    FlexAttention as zeros already (every score of the row is masked).
    """
    empty = ~plan.kept.any(-1)  # (B, H, Qb)
    if not empty.any():
        return None
    return empty.repeat_interleave(plan.block_size, dim=-1)[..., :n].to(device)


def flex_attention(q, k, v, plan: BlockPlan, compiled: bool = True) -> Tensor:
    """Softmax attention of ``q`` over ``k``/``v`` on the block layout ``plan``.

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values ``(B, H, M, Dv)``.
        plan: the graph's block layout.
        compiled: run the compiled kernel (eager FlexAttention otherwise, e.g. on CPU tests).

    Returns:
        ``(B, H, N, Dv)`` in ``v``'s dtype; rows of queries with no allowed key are zero.
    """
    from torch.nn.attention.flex_attention import flex_attention as flex

    dtype = v.dtype
    q, k, v = flex_inputs(q, k, v)
    block_mask = layout_block_mask(plan, q, k)
    fn = compiled_flex() if compiled else flex
    out = fn(
        q, k, v, block_mask=block_mask, scale=q.shape[-1] ** -0.5, kernel_options=kernel_options(q)
    )
    # Rows with no allowed key: flex returns zeros there already; make it explicit.
    rows = empty_rows(plan, q.shape[2], out.device)
    if rows is not None:
        out = out.masked_fill(rows.unsqueeze(-1), 0.0)
    return out.to(dtype)
