"""The block layout of a graph: which ``b × b`` blocks hold an edge, and their masks.

Graphs whose parts describe their blocks (bands, global tokens) are laid out from the
structure (:func:`structural_layout`); other graphs a slab of query blocks at a time
(:func:`slab_layout`). Both give the same layout. :func:`block_layout` picks one, and
:func:`flex_block_mask` turns a layout into a FlexAttention ``BlockMask``. The execution
kernels (``sparsebench.bench.kernels``) and :meth:`Graph.to_block_mask
<sparsebench.methods.Graph.to_block_mask>` share these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

    from .graph import Graph

__all__ = [
    "Layout",
    "block_layout",
    "flex_block_mask",
    "shared_masks",
    "slab_layout",
    "structural_layout",
]

#: ``(kept, full, partial_id, partial_masks)``: ``kept`` and ``full`` are bool
#: ``(B|1, H|1, Qb, Kb)`` (key blocks with at least one edge, with every pair an edge),
#: ``partial_id`` int64 of the same shape indexes ``partial_masks`` ``(P, b, b)`` (-1 where the
#: block is not partial). Dimensions of size 1 are shared by every sequence or head.
Layout = tuple[Tensor, Tensor, Tensor, Tensor]


def block_layout(graph: Graph, block_size: int = 128) -> Layout:
    """The layout of ``graph`` at one block size, from its structure where the parts allow.

    Graphs whose parts all describe their blocks (bands, global tokens: see
    :meth:`~sparsebench.methods.Part.block_candidates`) are laid out from the structure: only the
    candidate blocks are drawn, never a row slab, and partial blocks with the same edges share
    one mask. Other graphs are laid out a slab of query blocks at a time. Structure shared by
    every head or sequence keeps size 1 in that dimension.
    """
    layout = structural_layout(graph, block_size)
    if layout is None:
        return slab_layout(graph, block_size)
    kept, full, partial_id, masks = layout
    partial_id, masks = shared_masks(partial_id, masks)
    return kept, full, partial_id, masks


def _numbered(part: Tensor, start: int) -> Tensor:
    """Ids ``start, start + 1, …`` for the true entries of ``part`` in row-major order, else -1."""
    ids = torch.full(part.shape, -1, dtype=torch.long)
    ids[part] = torch.arange(start, start + int(part.sum()))
    return ids


def structural_layout(graph: Graph, b: int, max_blocks: int = 4096) -> Layout | None:
    """The layout drawn from the parts' candidate blocks, or ``None`` when a part cannot tell.

    Only candidate blocks are drawn (``max_blocks`` at a time), by point queries on the parts
    (:meth:`~sparsebench.methods.Part.edges_at`); padding and causality apply. Shapes broadcast
    over sequences and heads the parts share.
    """
    B, H, N, M = graph.shape
    Qb, Kb = -(-N // b), -(-M // b)
    candidates = [p.block_candidates(b, graph.shape) for p in graph.parts]
    if not candidates or any(c is None for c in candidates):
        return None
    cand = candidates[0]
    for c in candidates[1:]:
        cand = cand | c
    q_starts = (torch.arange(Qb) * b).view(1, 1, -1, 1)
    k_starts = (torch.arange(Kb) * b).view(1, 1, 1, -1)
    if graph.lengths is not None:
        L = graph.lengths.view(-1, 1, 1, 1)
        cand = cand & (q_starts < L) & (k_starts < L)
    if graph.causal:
        cand = cand & (k_starts <= q_starts + b - 1)
    where = cand.nonzero()  # (P, 4) in row-major order
    offsets = torch.arange(b)
    anys, alls, masks = [], [], []
    for s in range(0, where.shape[0], max_blocks):
        bi, hi, qb, kb = (c.view(-1, 1, 1) for c in where[s : s + max_blocks].unbind(-1))
        i = qb * b + offsets.view(1, -1, 1)
        j = kb * b + offsets.view(1, 1, -1)
        edges = None
        for p in graph.parts:
            e = p.edges_at(bi, hi, i, j)
            if e is None:
                return None
            edges = e if edges is None else edges | e
        if graph.lengths is None:
            edges = edges & (i < N) & (j < M)
        else:
            L = graph.lengths[bi]
            edges = edges & (i < L) & (j < L)
        if graph.causal:
            edges = edges & (j <= i)
        flat = edges.reshape(edges.shape[0], -1)
        any_edge, all_edges = flat.any(-1), flat.all(-1)
        anys.append(any_edge)
        alls.append(all_edges)
        masks.append(edges[any_edge & ~all_edges])
    any_edge = torch.cat(anys) if anys else torch.zeros(0, dtype=torch.bool)
    all_edges = torch.cat(alls) if alls else torch.zeros(0, dtype=torch.bool)
    kept = torch.zeros(cand.shape, dtype=torch.bool)
    full = torch.zeros_like(kept)
    kept[cand] = any_edge
    full[cand] = all_edges
    partial_id = _numbered(kept & ~full, 0)
    partial_masks = torch.cat(masks) if masks else torch.zeros(0, b, b, dtype=torch.bool)
    return kept, full, partial_id, partial_masks


def shared_masks(partial_id: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """One mask per distinct partial block: ``partial_id`` renumbered into deduplicated masks."""
    P, b, _ = masks.shape
    if P < 2 or (b * b) % 8:
        return partial_id, masks
    words = masks.reshape(P, -1).view(torch.int64)  # eight edges per word
    # Group by a hash of the words, then check the groups are exact (else sort the words).
    mult = torch.randint(1, 2**62, (words.shape[1],), generator=torch.Generator().manual_seed(0))
    _, inv = torch.unique((words * (mult | 1)).sum(-1), return_inverse=True)
    first = _first_of(inv)
    if not torch.equal(words, words[first[inv]]):
        _, inv = torch.unique(words, dim=0, return_inverse=True)
        first = _first_of(inv)
    return torch.where(partial_id >= 0, inv[partial_id.clamp(min=0)], -1), masks[first]


def _first_of(inv: Tensor) -> Tensor:
    """For group ids ``inv`` ``(P,)``, the first position of each group."""
    P = len(inv)
    first = torch.full((int(inv.max()) + 1,), P)
    return first.scatter_reduce_(0, inv, torch.arange(P), "amin")


def slab_layout(graph: Graph, b: int) -> Layout:
    """The layout read from the graph's dense rows, a slab of query blocks at a time."""
    B, H, N, M = graph.shape
    Qb, Kb = -(-N // b), -(-M // b)
    Bc, Hc = graph.slab(0, 0, expand=False).shape[:2]
    kept = torch.zeros(Bc, Hc, Qb, Kb, dtype=torch.bool)
    full = torch.zeros_like(kept)
    partial_id = torch.full(kept.shape, -1, dtype=torch.long)
    masks = []
    n_masks = 0
    for s, e in graph.row_chunks(multiple=b):
        edges = graph.slab(s, e, expand=False).cpu()  # (Bc, Hc, c, M)
        c = e - s
        edges = F.pad(edges, (0, Kb * b - M, 0, (-c) % b))
        blocks = edges.view(Bc, Hc, -1, b, Kb, b).permute(0, 1, 2, 4, 3, 5)  # (.., qb, Kb, b, b)
        if b % 8 == 0:
            any_edge, all_edges = _any_all(edges, b, Kb)
        else:
            any_edge, all_edges = blocks.any(-1).any(-1), blocks.all(-1).all(-1)
        rows = slice(s // b, s // b + any_edge.shape[2])
        kept[:, :, rows] = any_edge
        full[:, :, rows] = all_edges
        part = any_edge & ~all_edges
        partial_id[:, :, rows] = _numbered(part, n_masks)
        masks.append(blocks[part])
        n_masks += masks[-1].shape[0]
    partial_masks = torch.cat(masks) if masks else torch.zeros(0, b, b, dtype=torch.bool)
    return kept, full, partial_id, partial_masks


def _any_all(edges: Tensor, b: int, Kb: int) -> tuple[Tensor, Tensor]:
    """Per ``b × b`` block of a padded, contiguous bool slab: any edge, every pair an edge.

    Eight booleans are read as one 64-bit word, so the reductions touch an eighth of the
    elements and run along contiguous memory.
    """
    B, H, rows, _ = edges.shape
    words = edges.contiguous().view(torch.uint8).view(torch.int64)
    words = words.view(B, H, rows // b, b, Kb, b // 8)
    any_edge = (words != 0).any(-1).any(3)
    all_edges = (words == 0x0101010101010101).all(-1).all(3)
    return any_edge, all_edges


def _kv_blocks(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per query block, the number of true key blocks and their indices first (int32)."""
    num = mask.sum(-1).to(torch.int32)
    idx = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return num.contiguous(), idx.contiguous()


def flex_block_mask(
    layout: Layout,
    block_size: int,
    shape: tuple[int, int, int, int],
    device: torch.device | str | None = None,
) -> BlockMask:
    """A FlexAttention ``BlockMask`` of a layout (:func:`block_layout`).

    Full key blocks are listed as full (no mask is evaluated inside them), partial ones as
    partial with a ``mask_mod`` that reads the block's own mask. A layout dimension of size 1
    stays 1 in the ``BlockMask``, which FlexAttention broadcasts over sequences or heads.

    Args:
        layout: ``(kept, full, partial_id, partial_masks)``.
        block_size: the layout's block size ``b`` (the ``BlockMask``'s ``BLOCK_SIZE``).
        shape: the graph's ``(B, H, N, M)``.
        device: where the ``BlockMask`` lives (that of the attention inputs).
    """
    from torch.nn.attention.flex_attention import BlockMask

    kept, full, partial_id, partial_masks = layout
    b = block_size
    _, _, N, M = shape
    kv_num, kv_idx = _kv_blocks(kept & ~full)
    full_num, full_idx = _kv_blocks(full)
    # One lookup per score in the kernel: full blocks read an all-true mask, blocks not kept an
    # all-false one, and the ids are int32 (int64 index tiles cost a CUDA kernel shared memory).
    P = partial_masks.shape[0]
    masks = torch.cat(
        [partial_masks, partial_masks.new_ones(1, b, b), partial_masks.new_zeros(1, b, b)]
    ).to(device)
    ids = torch.where(full, P, torch.where(partial_id >= 0, partial_id, P + 1))
    ids = ids.to(device=device, dtype=torch.int32)
    per_batch, per_head = ids.shape[0] > 1, ids.shape[1] > 1

    def mask_mod(bi, hi, qi, ki):
        # Compiled kernels never call this inside full blocks; eager FlexAttention evaluates it
        # everywhere, so a full block answers True here too.
        return masks[
            ids[bi if per_batch else 0, hi if per_head else 0, qi // b, ki // b], qi % b, ki % b
        ]

    return BlockMask.from_kv_blocks(
        kv_num.to(device),
        kv_idx.to(device),
        full_num.to(device),
        full_idx.to(device),
        BLOCK_SIZE=b,
        mask_mod=mask_mod,
        seq_lengths=(N, M),
    )
