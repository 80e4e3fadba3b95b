"""The attention graph of one layer: which keys each query may attend to.

A :class:`Graph` has shape ``(B, H, N, M)`` (batch, heads, queries, keys). It is the union of
*parts*, each a structured description of some edges (a dense mask, per-row key lists, shared
groups, a band, global tokens, a block layout), intersected with the *valid* pairs: a query
``i`` and key ``j`` of sequence ``b`` are valid when both are below ``lengths[b]`` and, for a
causal graph, ``j <= i``.

The parts are kept as they are, so execution kernels can use the structure (a band is a band,
buckets are buckets), and any graph can be materialised a slab of query rows at a time with
:meth:`Graph.slab`, so metrics never need the full ``N x M`` matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Band",
    "BlockLayout",
    "DenseMask",
    "Globals",
    "Graph",
    "Groups",
    "Part",
    "RowIndex",
    "valid_slab",
]

# Slabs are sized so one bool slab of (B, H, rows, M) holds about this many elements.
_SLAB_ELEMENTS = 1 << 24


def _expand_bh(t: Tensor, B: int, H: int, what: str) -> Tensor:
    if t.shape[0] not in (1, B) or t.shape[1] not in (1, H):
        raise ValueError(
            f"{what} has leading dims {tuple(t.shape[:2])}; expected (1 or B={B}, 1 or H={H})"
        )
    return t


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
    """An explicit bool mask ``(B|1, H|1, N, M)``."""

    mask: Tensor

    def slab(self, start, stop, shape):  # noqa: D102
        return self.mask[:, :, start:stop]

    def index_batch(self, index):  # noqa: D102
        return self if self.mask.shape[0] == 1 else DenseMask(self.mask[index])


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
        ok = (idx >= 0) & (idx < L) & (i < L)
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
        qv = torch.arange(N, device=qg.device) < lengths.view(B, 1, 1)
        kv = torch.arange(M, device=kg.device) < lengths.view(B, 1, 1)
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
        per_row = (last - first + 1).clamp(min=0) * (i < L)
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

    def index_batch(self, index):  # noqa: D102
        if self.blocks.shape[0] == 1:
            return self
        return BlockLayout(self.blocks[index], self.block_size)


def valid_slab(
    start: int, stop: int, shape: tuple[int, int, int, int], lengths: Tensor | None, causal: bool
) -> Tensor:
    """Bool ``(B|1, 1, rows, M)`` of valid (query, key) pairs for query rows ``[start, stop)``."""
    B, _, _, M = shape
    i = torch.arange(start, stop).view(1, 1, -1, 1)
    j = torch.arange(M).view(1, 1, 1, -1)
    valid = torch.ones(1, 1, stop - start, M, dtype=torch.bool)
    if lengths is not None:
        L = lengths.view(B, 1, 1, 1)
        valid = (i < L) & (j < L)
    if causal:
        valid = valid & (j <= i)
    return valid


class Graph:
    """A predicted or gold attention graph of one layer, ``(B, H, N, M)``.

    Args:
        shape: ``(B, H, N, M)``.
        parts: the structured edge sets whose union is the graph (before validity).
        lengths: ``(B,)`` valid length of each sequence (queries and keys); ``None`` = all valid.
        causal: whether keys after the query are excluded.
    """

    def __init__(
        self,
        shape: Sequence[int],
        parts: Sequence[Part] = (),
        *,
        lengths: Tensor | None = None,
        causal: bool = False,
    ):
        if len(shape) != 4:
            raise ValueError(f"Graph shape must be (B, H, N, M), got {tuple(shape)}")
        self.shape: tuple[int, int, int, int] = tuple(int(s) for s in shape)  # type: ignore[assignment]
        B, H, N, M = self.shape
        if causal and N != M:
            raise ValueError(f"a causal graph needs N == M, got N={N}, M={M}")
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1).cpu()
            if lengths.shape[0] != B:
                raise ValueError(f"lengths has {lengths.shape[0]} entries for a batch of {B}")
            if (lengths < 0).any() or (lengths > min(N, M)).any():
                raise ValueError(f"lengths must lie in [0, {min(N, M)}], got {lengths.tolist()}")
        self.parts: tuple[Part, ...] = tuple(parts)
        self.lengths = lengths
        self.causal = bool(causal)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls, mask: Tensor, *, lengths: Tensor | None = None, causal: bool = False
    ) -> Graph:
        """Build a graph from a bool tensor ``(B, H, N, M)`` (any 4-d broadcastable shape)."""
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 4:
            raise ValueError(
                "Graph.from_dense needs a 4-d bool tensor (B, H, N, M); got "
                f"{type(mask).__name__} {getattr(mask, 'dtype', '')} "
                f"{tuple(getattr(mask, 'shape', ()))}"
            )
        return cls(mask.shape, [DenseMask(mask)], lengths=lengths, causal=causal)

    @classmethod
    def empty(cls, shape: Sequence[int], *, lengths=None, causal: bool = False) -> Graph:
        """A graph with no edges."""
        return cls(shape, [], lengths=lengths, causal=causal)

    def union(self, *others: Graph | Part) -> Graph:
        """This graph with the edges of ``others`` (graphs of the same shape, or parts) added."""
        parts = list(self.parts)
        for o in others:
            if isinstance(o, Graph):
                if o.shape != self.shape:
                    raise ValueError(f"cannot unite graphs of shapes {self.shape} and {o.shape}")
                parts.extend(o.parts)
            else:
                parts.append(o)
        return Graph(self.shape, parts, lengths=self.lengths, causal=self.causal)

    __or__ = union

    def with_validity(self, *, lengths: Tensor | None = None, causal: bool | None = None) -> Graph:
        """The same parts under other lengths / causality."""
        return Graph(
            self.shape,
            self.parts,
            lengths=self.lengths if lengths is None else lengths,
            causal=self.causal if causal is None else causal,
        )

    def index_batch(self, index: Tensor | slice) -> Graph:
        """The graph of a subset of the batch."""
        if isinstance(index, slice):
            index = torch.arange(self.shape[0])[index]
        index = torch.as_tensor(index, dtype=torch.long)
        shape = (len(index), *self.shape[1:])
        lengths = None if self.lengths is None else self.lengths[index]
        return Graph(
            shape, [p.index_batch(index) for p in self.parts], lengths=lengths, causal=self.causal
        )

    # -- access ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the parts' tensors (CPU for a graph with no tensor parts)."""
        for p in self.parts:
            for v in vars(p).values():
                if isinstance(v, Tensor):
                    return v.device
        return torch.device("cpu")

    def find(self, kind: type[Part]) -> list[Part]:
        """The parts of one kind (e.g. ``graph.find(Band)``), for kernels that use structure."""
        return [p for p in self.parts if isinstance(p, kind)]

    def valid_slab(self, start: int, stop: int) -> Tensor:
        """Bool ``(B|1, 1, rows, M)`` of the valid pairs of rows ``[start, stop)``."""
        return valid_slab(start, stop, self.shape, self.lengths, self.causal)

    def slab(self, start: int, stop: int, *, expand: bool = True) -> Tensor:
        """The edges of query rows ``[start, stop)`` as a bool ``(B, H, rows, M)`` tensor.

        With ``expand=False`` the batch and head dims stay 1 where no part depends on them
        (bands, global tokens), so head-independent structure is built once, not per head.
        """
        B, H, N, M = self.shape
        start, stop = max(0, start), min(N, stop)
        out = self.valid_slab(start, stop).to(self.device)
        edges = None
        for p in self.parts:
            s = p.slab(start, stop, self.shape).to(self.device)
            edges = s if edges is None else edges | s
        out = out & edges if edges is not None else torch.zeros_like(out)
        return out.expand(B, H, stop - start, M).contiguous() if expand else out

    def row_chunks(self, rows: int | None = None, multiple: int = 1) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` row ranges whose slabs stay near a fixed memory budget."""
        B, H, N, M = self.shape
        if rows is None:
            rows = max(1, _SLAB_ELEMENTS // max(1, B * H * M))
        rows = max(multiple, rows // multiple * multiple)
        for start in range(0, N, rows):
            yield start, min(N, start + rows)

    def to_dense(self) -> Tensor:
        """All edges as a bool ``(B, H, N, M)`` tensor."""
        return self.slab(0, self.shape[2])

    def num_edges(self) -> Tensor:
        """Valid edges per sequence and head, ``(B, H)`` int64.

        Uses a closed form when the graph is one structured part (band, groups); otherwise it
        counts slab by slab, never holding more than one slab.
        """
        B, H, N, M = self.shape
        if not self.parts:
            return torch.zeros(B, H, dtype=torch.long)
        if len(self.parts) == 1:
            lengths = self.lengths if self.lengths is not None else torch.full((B,), min(N, M))
            if self.lengths is None and N != M:
                lengths = None
            if lengths is not None:
                c = self.parts[0].count(lengths, self.causal, self.shape)
                if c is not None:
                    return c
        total = torch.zeros(B, H, dtype=torch.long)
        for s, e in self.row_chunks():
            total += self.slab(s, e).sum((-1, -2))
        return total

    def num_valid(self) -> Tensor:
        """Valid (query, key) pairs per sequence, ``(B,)`` int64."""
        B, H, N, M = self.shape
        if self.lengths is None:
            n = N * (N + 1) // 2 if self.causal else N * M
            return torch.full((B,), n, dtype=torch.long)
        L = self.lengths
        return L * (L + 1) // 2 if self.causal else L * L

    def __repr__(self) -> str:
        kinds = ", ".join(type(p).__name__ for p in self.parts) or "no parts"
        return f"Graph(shape={self.shape}, causal={self.causal}, parts=[{kinds}])"
