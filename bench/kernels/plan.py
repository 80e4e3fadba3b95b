"""The block layout of a graph: which ``b × b`` blocks hold an edge, and their masks.

Graphs whose parts describe their blocks (bands, global tokens) are laid out from the
structure (:func:`structural_layout`); other graphs a slab of query blocks at a time
(:func:`slab_layout`). Both give the same layout. The layout itself is computed beside the
graph (:mod:`sparsebench.methods.layout`, shared with ``Graph.to_block_mask``); a
:class:`BlockPlan` is it broadcast to every sequence and head.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from sparsebench.methods import Graph
from sparsebench.methods.layout import Layout, block_layout, slab_layout, structural_layout

__all__ = ["BlockPlan", "Layout", "block_plan", "slab_layout", "structural_layout"]


@dataclass
class BlockPlan:
    """The block layout of a graph at one block size.

    Attributes:
        block_size: kernel block size ``b``.
        kept: ``(B, H, Qb, Kb)`` bool, key blocks with at least one edge.
        full: ``(B, H, Qb, Kb)`` bool, key blocks whose every pair is an edge.
        partial_id: ``(B, H, Qb, Kb)`` int64 index into ``partial_masks`` (-1 if not partial).
        partial_masks: ``(P, b, b)`` bool edges inside partial blocks (blocks with the same
            edges may share one mask).
    """

    block_size: int
    kept: Tensor
    full: Tensor
    partial_id: Tensor
    partial_masks: Tensor

    @property
    def density(self) -> float:
        """Share of blocks kept."""
        return float(self.kept.float().mean())


def block_plan(graph: Graph, block_size: int = 128) -> BlockPlan:
    """Turn ``graph`` into a block layout.

    Graphs whose parts all describe their blocks (bands, global tokens: see
    :meth:`~sparsebench.methods.Part.block_candidates`) are laid out from the structure: only the
    candidate blocks are drawn, never a row slab, and partial blocks with the same edges share
    one mask. Other graphs are laid out a slab of query blocks at a time. Structure shared by
    every head or sequence is laid out once and broadcast, and heads that share a partial block
    share its mask.
    """
    B, H, N, M = graph.shape
    Qb, Kb = -(-N // block_size), -(-M // block_size)
    kept, full, partial_id, masks = block_layout(graph, block_size)

    def spread(t: Tensor) -> Tensor:
        return t.expand(B, H, Qb, Kb).contiguous()

    return BlockPlan(block_size, spread(kept), spread(full), spread(partial_id), masks)
