"""The attention graph of one layer: which keys each query may attend to.

A :class:`Graph` has shape ``(B, H, N, M)`` (batch, heads, queries, keys). It is the union of
*parts* (:mod:`sparsebench.methods.parts`), each a structured description of some edges,
intersected with the *valid* pairs: a query ``i`` and key ``j`` of sequence ``b`` are valid when
both are below ``lengths[b]`` and, for a causal graph, ``j <= i``.

The parts are kept as they are, so execution kernels can use the structure (a band is a band,
buckets are buckets), and any graph can be materialised a slab of query rows at a time with
:meth:`Graph.slab`, so metrics never need the full ``N x M`` matrix.

To run your own model with a graph, :meth:`Graph.to_block_mask` gives a FlexAttention
``BlockMask`` and :meth:`Graph.to_attn_bias` an additive bias for xformers or SDPA.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._masks import as_lengths, valid_pairs
from .parts import DenseMask, Part

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

__all__ = ["Graph"]

# Slabs are sized so one bool slab of (B, H, rows, M) holds about this many elements.
_SLAB_ELEMENTS = 1 << 24


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
        lengths = as_lengths(lengths, B, bound=min(N, M))
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
        same = (causal is None or bool(causal) == self.causal) and (
            lengths is None or _same_lengths(self.lengths, lengths)
        )
        parts = self.parts
        if not same:  # a laid-out mask was valid for the old lengths only
            parts = [DenseMask(p.mask) if isinstance(p, DenseMask) else p for p in parts]
        return Graph(
            self.shape,
            parts,
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
        B, _, N, M = self.shape
        return valid_pairs(B, N, M, self.lengths, self.causal, rows=(start, stop))

    def slab(self, start: int, stop: int, *, expand: bool = True) -> Tensor:
        """The edges of query rows ``[start, stop)`` as a bool ``(B, H, rows, M)`` tensor.

        With ``expand=False`` the batch and head dims stay 1 where no part depends on them
        (bands, global tokens), so head-independent structure is built once, not per head.
        A :meth:`materialize`-d graph returns views of its mask.
        """
        B, H, N, M = self.shape
        start, stop = max(0, start), min(N, stop)
        if len(self.parts) == 1 and isinstance(self.parts[0], DenseMask) and self.parts[0].valid:
            return self.parts[0].mask[:, :, start:stop]
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

    def materialize(self) -> Graph:
        """The graph with its edges laid out once (validity applied): later slabs are views.

        For code that reads the same rows several times (metrics, then the output error); it
        holds the whole ``(B, H, N, M)`` mask, so use it where one slab covers every row.
        """
        mask = self.to_dense()
        return Graph(
            self.shape, [DenseMask(mask, valid=True)], lengths=self.lengths, causal=self.causal
        )

    # -- for your own model --------------------------------------------------------------
    def to_block_mask(
        self, block_size: int = 128, *, device: torch.device | str | None = None
    ) -> BlockMask:
        """The graph as a FlexAttention ``BlockMask`` (``flex_attention(q, k, v, block_mask=…)``).

        Key blocks of ``block_size`` with no edge are skipped, blocks whose every pair is an
        edge are marked full (no mask inside), and the others read their own ``b × b`` mask.
        Bands and global tokens are laid out from their structure; other graphs a slab of rows
        at a time, so ``N × M`` is never held at once. Padding and causality apply. A sequence
        or head dimension every part shares stays 1, and FlexAttention broadcasts it. Query
        rows with no edge (padding) get a zero output from FlexAttention.

        Args:
            block_size: FlexAttention's ``BLOCK_SIZE`` (128 on GPUs; a multiple of 8 is fastest).
            device: where the mask lives: that of ``q``, ``k``, ``v`` (default: the graph's).
        """
        from .layout import block_layout, flex_block_mask

        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        layout = block_layout(self, block_size)
        return flex_block_mask(layout, block_size, self.shape, device or self.device)

    def to_attn_bias(
        self, dtype: torch.dtype = torch.float32, *, device: torch.device | str | None = None
    ) -> Tensor:
        """The graph as an additive attention bias ``(B, H, N, M)``: 0 on edges, ``-inf`` elsewhere.

        It is a plain tensor, so it is the ``attn_bias`` of xformers'
        ``memory_efficient_attention`` (on ``(B, N, H, D)`` inputs) and the ``attn_mask`` of
        ``torch.nn.functional.scaled_dot_product_attention``. Its rows are stored with the key
        dimension padded to a multiple of 8 elements, the alignment xformers' kernels need
        (the returned tensor is a view of the first ``M`` columns). It is dense, ``B·H·N·M``
        values; for long sequences use :meth:`to_block_mask`. A row with no edge (a padded
        query) is all ``-inf``: SDPA returns NaN there, where sparsebench's kernels return 0.

        Args:
            dtype: a floating dtype, that of ``q`` (xformers wants the bias in the inputs' dtype).
            device: where the bias lives (default: the graph's device).
        """
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"to_attn_bias needs a floating dtype (that of q), got {dtype!r}")
        B, H, N, M = self.shape
        device = torch.device(device) if device is not None else self.device
        padded = -(-M // 8) * 8
        store = torch.full((B, H, N, padded), float("-inf"), dtype=dtype, device=device)
        bias = store[..., :M]
        for s, e in self.row_chunks():
            bias[:, :, s:e].masked_fill_(self.slab(s, e, expand=False).to(device), 0.0)
        return bias

    def num_edges(self) -> Tensor:
        """Valid edges per sequence and head, ``(B, H)`` int64 on the CPU (wherever the parts are).

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
                    return c.cpu()
        total = torch.zeros(B, H, dtype=torch.long)
        for s, e in self.row_chunks():
            total += self.slab(s, e).sum((-1, -2)).cpu()
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


def _same_lengths(a: Tensor | None, b: Tensor) -> bool:
    return a is not None and a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
