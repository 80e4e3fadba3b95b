"""The parts of an attention graph: structured sets of (query, key) edges.

A :class:`~sparsebench.methods.Graph` is the union of parts, intersected with the valid pairs.
Each part describes some edges in the form a method produces them (a dense mask, per-row key
lists, shared groups, a band, global tokens, a block layout), so execution kernels can use the
structure. A part draws any slab of query rows on request (:meth:`Part.slab`) and, where its
structure allows, counts its valid edges in closed form (:meth:`Part.count`) or names the blocks
that hold an edge (:meth:`Part.block_candidates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._masks import real_tokens

__all__ = ["Band", "BlockLayout", "DenseMask", "Globals", "Groups", "Part", "RowIndex"]


class Part:
    """One structured set of edges. Subclasses say how to draw rows ``[start, stop)``."""

    def slab(self, start: int, stop: int, shape: tuple[int, int, int, int]) -> Tensor:
        """Bool edges of query rows ``[start, stop)``, broadcastable to ``(B, H, rows, M)``."""
        raise NotImplementedError

    def count(self, lengths: Tensor, causal: bool, shape: tuple[int, int, int, int]):
        """Closed-form valid edge count per (B, H), or ``None`` when it needs materialising."""
        return None

    def index_batch(self, index: Tensor) -> Part:
        """The same part for a subset of the batch (parts shared over the batch return self)."""
        return self

    def block_candidates(self, b: int, shape: tuple[int, int, int, int]) -> Tensor | None:
        """A superset of the ``b × b`` blocks holding an edge, from the structure alone.

        Bool ``(B|1, H|1, ceil(N/b), ceil(M/b))``, or ``None`` when only materialising rows can
        tell. Parts that answer this and :meth:`edges_at` get their block layout without any slab.
        """
        return None

    def edges_at(self, bi: Tensor, hi: Tensor, i: Tensor, j: Tensor) -> Tensor | None:
        """Edges at broadcast index tensors, or ``None`` if the part cannot answer point queries.

        ``bi``, ``hi``, ``i``, ``j`` are batch, head, query and key positions.
        """
        return None


@dataclass(frozen=True, eq=False)
class DenseMask(Part):
    """An explicit bool mask ``(B|1, H|1, N, M)``.

    ``valid`` marks a full ``(B, H, N, M)`` mask that holds only valid pairs of its graph
    (:meth:`~sparsebench.methods.Graph.materialize`): its slabs are views, with no validity step.
    """

    mask: Tensor
    valid: bool = False

    def slab(self, start, stop, shape):  # noqa: D102
        return self.mask[:, :, start:stop]

    def index_batch(self, index):  # noqa: D102
        return self if self.mask.shape[0] == 1 else DenseMask(self.mask[index], self.valid)


@dataclass(frozen=True, eq=False)
class RowIndex(Part):
    """Per-query key lists ``(B|1, H|1, N, K)``; ``-1`` pads a row; keys in a row are distinct.

    ``weights`` (same shape, optional) carries a value per listed edge, e.g. the gold
    α-entmax probability.
    """

    index: Tensor
    weights: Tensor | None = None

    def slab(self, start, stop, shape):  # noqa: D102
        idx = self.index[:, :, start:stop]  # (B|1, H|1, c, K)
        out = torch.zeros(*idx.shape[:3], shape[3] + 1, dtype=torch.bool, device=idx.device)
        # -1 goes to a spare last column that is dropped.
        out.scatter_(-1, torch.where(idx < 0, shape[3], idx), True)
        return out[..., : shape[3]]

    def count(self, lengths, causal, shape):  # noqa: D102
        # Keys in a row are distinct, so valid listed entries are the edges.
        B, H, N, M = shape
        idx = self.index.expand(B, H, N, self.index.shape[-1])
        L = lengths.view(B, 1, 1, 1).to(idx.device)
        i = torch.arange(N, device=idx.device).view(1, 1, N, 1)
        ok = (idx >= 0) & (idx < L) & real_tokens(lengths, B, N, idx.device).view(B, 1, N, 1)
        if causal:
            ok &= idx <= i
        return ok.sum((-1, -2))

    def slab_weights(self, start: int, stop: int, shape) -> Tensor:
        """Dense float weights of rows ``[start, stop)`` (zero where no edge)."""
        if self.weights is None:
            raise ValueError("this RowIndex part carries no weights")
        idx = self.index[:, :, start:stop]
        w = self.weights[:, :, start:stop]
        out = torch.zeros(*idx.shape[:3], shape[3] + 1, dtype=w.dtype, device=idx.device)
        out.scatter_(-1, torch.where(idx < 0, shape[3], idx), torch.where(idx < 0, 0, w))
        return out[..., : shape[3]]

    def index_batch(self, index):  # noqa: D102
        if self.index.shape[0] == 1:
            return self
        w = None if self.weights is None else self.weights[index]
        return RowIndex(self.index[index], w)


@dataclass(frozen=True, eq=False)
class Groups(Part):
    """Group memberships: query ``i`` and key ``j`` are linked if they share a group.

    ``q_groups`` is ``(B|1, H|1, N, G)`` and ``k_groups`` ``(B|1, H|1, M, G)`` of int ids, ``-1``
    for "no group". With ``match="slot"`` ids are compared slot by slot (slot ``a`` of the query
    against slot ``a`` of the key: one hash round, one projected coordinate); with ``match="any"``
    every query slot is compared with every key slot (top-k cluster sets that intersect).
    """

    q_groups: Tensor
    k_groups: Tensor
    match: str = "slot"

    def __post_init__(self):
        if self.match not in ("slot", "any"):
            raise ValueError(f"Groups.match must be 'slot' or 'any', got {self.match!r}")
        if self.match == "slot" and self.q_groups.shape[-1] != self.k_groups.shape[-1]:
            raise ValueError("slot matching needs as many query slots as key slots")

    def slab(self, start, stop, shape):  # noqa: D102
        qg = self.q_groups[:, :, start:stop]  # (B|1, H|1, c, G)
        kg = self.k_groups  # (B|1, H|1, M, G)
        out = None
        pairs = (
            [(a, a) for a in range(qg.shape[-1])]
            if self.match == "slot"
            else [(a, b) for a in range(qg.shape[-1]) for b in range(kg.shape[-1])]
        )
        for a, b in pairs:
            qa = qg[..., a].unsqueeze(-1)  # (B|1, H|1, c, 1)
            kb = kg[..., b].unsqueeze(-2)  # (B|1, H|1, 1, M)
            hit = (qa == kb) & (qa >= 0)
            out = hit if out is None else out | hit
        return out

    def count(self, lengths, causal, shape):  # noqa: D102
        # Closed form for one slot without causality: sum over groups of |Q_g| * |K_g|.
        if causal or self.q_groups.shape[-1] != 1 or self.k_groups.shape[-1] != 1:
            return None
        B, H, N, M = shape
        qg = self.q_groups[..., 0].expand(B, H, N)
        kg = self.k_groups[..., 0].expand(B, H, M)
        num = int(max(qg.max(), kg.max()).item()) + 2 if qg.numel() and kg.numel() else 1
        qv = real_tokens(lengths, B, N, qg.device).view(B, 1, N)
        kv = real_tokens(lengths, B, M, kg.device).view(B, 1, M)
        # Group -1 (none) goes to bin 0, which is then dropped.
        qc = torch.zeros(B, H, num, dtype=torch.long, device=qg.device)
        kc = torch.zeros(B, H, num, dtype=torch.long, device=kg.device)
        qc.scatter_add_(-1, qg + 1, qv.long().expand(B, H, N))
        kc.scatter_add_(-1, kg + 1, kv.long().expand(B, H, M))
        return (qc[..., 1:] * kc[..., 1:]).sum(-1)

    def index_batch(self, index):  # noqa: D102
        qg = self.q_groups if self.q_groups.shape[0] == 1 else self.q_groups[index]
        kg = self.k_groups if self.k_groups.shape[0] == 1 else self.k_groups[index]
        return Groups(qg, kg, self.match)


@dataclass(frozen=True, eq=False)
class Band(Part):
    """A band around the diagonal: edges with ``lo <= j - i <= hi``."""

    lo: int
    hi: int

    def slab(self, start, stop, shape):  # noqa: D102
        i = torch.arange(start, stop).unsqueeze(-1)
        j = torch.arange(shape[3]).unsqueeze(0)
        off = j - i
        return ((off >= self.lo) & (off <= self.hi)).view(1, 1, stop - start, shape[3])

    def count(self, lengths, causal, shape):  # noqa: D102
        B, H, N, M = shape
        i = torch.arange(N).view(1, N)
        L = lengths.view(B, 1)
        hi = self.hi if not causal else min(self.hi, 0)
        first = (i + self.lo).clamp(min=0)
        last = torch.minimum(i + hi, L - 1)
        per_row = (last - first + 1).clamp(min=0) * real_tokens(lengths, B, N)
        return per_row.sum(-1, keepdim=True).expand(B, H).clone()

    def block_candidates(self, b, shape):  # noqa: D102
        qb = torch.arange(-(-shape[2] // b)).view(-1, 1) * b
        kb = torch.arange(-(-shape[3] // b)).view(1, -1) * b
        # Some offset j - i of the block, in [kb - qb - b + 1, kb - qb + b - 1], meets the band.
        return ((kb - qb + b - 1 >= self.lo) & (kb - qb - b + 1 <= self.hi))[None, None]

    def edges_at(self, bi, hi, i, j):  # noqa: D102
        # Shift the smaller operand, so no full-size offset tensor is built.
        return (j >= i + self.lo) & (j <= i + self.hi)


@dataclass(frozen=True, eq=False)
class Globals(Part):
    """Global tokens: their query rows and key columns are full. ``positions`` is ``(B, G)``.

    A position of ``-1`` is ignored, so sequences may have different numbers of global tokens.
    """

    positions: Tensor

    def slab(self, start, stop, shape):  # noqa: D102
        pos = self.positions  # (B|1, G)
        rows = torch.arange(start, stop, device=pos.device).view(1, -1, 1)
        cols = torch.arange(shape[3], device=pos.device).view(1, -1, 1)
        is_row = (rows == pos.unsqueeze(1)).any(-1)  # (B|1, c)
        is_col = (cols == pos.unsqueeze(1)).any(-1)  # (B|1, M)
        return is_row[:, None, :, None] | is_col[:, None, None, :]  # (B|1, 1, c, M)

    def block_candidates(self, b, shape):  # noqa: D102
        _, _, N, M = shape
        pos = self.positions  # (B|1, G)
        Qb, Kb = -(-N // b), -(-M // b)
        row = torch.zeros(pos.shape[0], Qb + 1, dtype=torch.bool)
        col = torch.zeros(pos.shape[0], Kb + 1, dtype=torch.bool)
        # -1 (no token) and positions past the end go to a spare last block, then dropped.
        row.scatter_(1, torch.where((pos >= 0) & (pos < N), pos // b, Qb).cpu(), True)
        col.scatter_(1, torch.where((pos >= 0) & (pos < M), pos // b, Kb).cpu(), True)
        return (row[:, None, :Qb, None] | col[:, None, None, :Kb]).contiguous()

    def edges_at(self, bi, hi, i, j):  # noqa: D102
        pos = self.positions.cpu()[bi.clamp(max=self.positions.shape[0] - 1)]  # (*bi, G)
        is_row = (i.unsqueeze(-1) == pos).any(-1)
        is_col = (j.unsqueeze(-1) == pos).any(-1)
        return is_row | is_col

    def index_batch(self, index):  # noqa: D102
        return self if self.positions.shape[0] == 1 else Globals(self.positions[index])


@dataclass(frozen=True, eq=False)
class BlockLayout(Part):
    """A block layout ``(B|1, H|1, ceil(N/b), ceil(M/b))``: every pair inside a kept block."""

    blocks: Tensor
    block_size: int

    def slab(self, start, stop, shape):  # noqa: D102
        b = self.block_size
        rows = torch.arange(start, stop) // b
        cols = torch.arange(shape[3]) // b
        return self.blocks[:, :, rows][..., cols]

    def block_candidates(self, b, shape):  # noqa: D102
        # Layout block u covers tokens [u·s, (u+1)·s): kernel blocks u·s//b … ((u+1)·s − 1)//b.
        s = self.block_size
        blocks = self.blocks.cpu().float()

        def cover(count: int, kernel: int) -> Tensor:
            u = torch.arange(count).view(-1, 1)
            kb = torch.arange(kernel).view(1, -1)
            return ((kb >= u * s // b) & (kb <= ((u + 1) * s - 1) // b)).float()

        rows = cover(blocks.shape[2], -(-shape[2] // b))
        cols = cover(blocks.shape[3], -(-shape[3] // b))
        return (rows.T @ blocks @ cols) > 0

    def edges_at(self, bi, hi, i, j):  # noqa: D102
        s, blocks = self.block_size, self.blocks.cpu()
        nq, nk = blocks.shape[2], blocks.shape[3]
        inside = (i // s < nq) & (j // s < nk)
        bi, hi = bi.clamp(max=blocks.shape[0] - 1), hi.clamp(max=blocks.shape[1] - 1)
        return blocks[bi, hi, (i // s).clamp(max=nq - 1), (j // s).clamp(max=nk - 1)] & inside

    def index_batch(self, index):  # noqa: D102
        if self.blocks.shape[0] == 1:
            return self
        return BlockLayout(self.blocks[index], self.block_size)
