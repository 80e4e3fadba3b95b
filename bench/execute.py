"""Attention restricted to a graph, by paths that really skip the work the graph excludes.

``execute(q, k, v, graph, normalizer=..., path=...)``:

* ``"dense"`` — the reference: scores of all pairs, masked to the graph (row slabs, so memory
  stays bounded), normalised, times ``v``.
* ``"block"`` — the graph becomes a block layout (kernel block size 64 or 128): for each query
  block, the key blocks holding an edge, split into *full* blocks (every pair an edge) and
  *partial* ones (a per-block bit mask). The kept key blocks of a query block are gathered and
  normalised over the kept entries only, so α-entmax thresholds are found on those entries.
  Query blocks are processed in groups of similar kept-block counts; key columns are gathered
  in units of 16, so a block holding only a global token's column costs one unit; the few
  queries that would widen their block to many more key blocks than its other rows (a global
  token's row) are taken out and attended row by row.
* ``"flex"`` — softmax only: the same block layout fed to FlexAttention
  (``BlockMask.from_kv_blocks``), compiled once per process.
* ``"grouped"`` — for graphs that are one set of groups (buckets or clusters: one slot of a
  :class:`~sparsebench.methods.Groups` part): queries and keys are sorted by group and each
  group attends within itself.

All paths give the same result as ``"dense"`` on the same graph; a query with no allowed key
outputs zeros (it never falls back to full attention).
"""

from __future__ import annotations

import bisect
import importlib.util
from dataclasses import dataclass
from functools import cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsebench.methods import Graph, Groups, attention_logits, attention_probs, check_qk

__all__ = ["BlockPlan", "auto_path", "block_plan", "execute"]

Normalizer = Literal["entmax", "softmax"]


# -- dense reference --------------------------------------------------------------------------
def _dense(q, k, v, graph: Graph, normalizer, alpha) -> Tensor:
    B, H, N, _ = q.shape
    out = torch.zeros(B, H, N, v.shape[-1], dtype=v.dtype, device=v.device)
    for s, e in graph.row_chunks():
        z = attention_logits(q[:, :, s:e], k)  # (B, H, c, M)
        z = z.masked_fill(~graph.slab(s, e).to(z.device), float("-inf"))
        out[:, :, s:e] = attention_probs(z, normalizer, alpha) @ v
    return out


# -- block layout ---------------------------------------------------------------------------
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
    parts = _structural_plan(graph, block_size)
    if parts is not None:  # bands and global tokens repeat the same few partial blocks
        kept, full, pid, pm = parts
        pid, pm = _shared_masks(pid, pm)
    else:
        kept, full, pid, pm = _slab_plan(graph, block_size)

    def spread(t: Tensor) -> Tensor:
        return t.expand(B, H, Qb, Kb).contiguous()

    return BlockPlan(block_size, spread(kept), spread(full), spread(pid), pm)


def _numbered(part: Tensor, start: int) -> Tensor:
    """Ids ``start, start + 1, …`` for the true entries of ``part`` in row-major order, else -1."""
    ids = torch.full(part.shape, -1, dtype=torch.long)
    ids[part] = torch.arange(start, start + int(part.sum()))
    return ids


def _structural_plan(graph: Graph, b: int, max_blocks: int = 4096):
    B, H, N, M = graph.shape
    Qb, Kb = -(-N // b), -(-M // b)
    cands = [p.block_candidates(b, graph.shape) for p in graph.parts]
    if not cands or any(c is None for c in cands):
        return None
    cand = cands[0]
    for c in cands[1:]:
        cand = cand | c
    qs = (torch.arange(Qb) * b).view(1, 1, -1, 1)
    ks = (torch.arange(Kb) * b).view(1, 1, 1, -1)
    if graph.lengths is not None:
        L = graph.lengths.view(-1, 1, 1, 1)
        cand = cand & (qs < L) & (ks < L)
    if graph.causal:
        cand = cand & (ks <= qs + b - 1)
    nz = cand.nonzero()  # (P, 4) in row-major order
    ar = torch.arange(b)
    anys, alls, masks = [], [], []
    for s in range(0, nz.shape[0], max_blocks):
        bi, hi, qb, kb = (c.view(-1, 1, 1) for c in nz[s : s + max_blocks].unbind(-1))
        i = qb * b + ar.view(1, -1, 1)
        j = kb * b + ar.view(1, 1, -1)
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
        anyb, allb = flat.any(-1), flat.all(-1)
        anys.append(anyb)
        alls.append(allb)
        masks.append(edges[anyb & ~allb])
    anyb = torch.cat(anys) if anys else torch.zeros(0, dtype=torch.bool)
    allb = torch.cat(alls) if alls else torch.zeros(0, dtype=torch.bool)
    kept = torch.zeros(cand.shape, dtype=torch.bool)
    full = torch.zeros_like(kept)
    kept[cand] = anyb
    full[cand] = allb
    pid = _numbered(kept & ~full, 0)
    pm = torch.cat(masks) if masks else torch.zeros(0, b, b, dtype=torch.bool)
    return kept, full, pid, pm


def _shared_masks(pid: Tensor, pm: Tensor) -> tuple[Tensor, Tensor]:
    """One mask per distinct partial block: ``pid`` renumbered into the deduplicated ``pm``."""
    P, b, _ = pm.shape
    if P < 2 or (b * b) % 8:
        return pid, pm
    words = pm.reshape(P, -1).view(torch.int64)  # eight edges per word
    # Group by a hash of the words, then check the groups are exact (else sort the words).
    mult = torch.randint(1, 2**62, (words.shape[1],), generator=torch.Generator().manual_seed(0))
    _, inv = torch.unique((words * (mult | 1)).sum(-1), return_inverse=True)
    first = _first_of(inv)
    if not torch.equal(words, words[first[inv]]):
        _, inv = torch.unique(words, dim=0, return_inverse=True)
        first = _first_of(inv)
    return torch.where(pid >= 0, inv[pid.clamp(min=0)], -1), pm[first]


def _first_of(inv: Tensor) -> Tensor:
    """For group ids ``inv`` ``(P,)``, the first position of each group."""
    P = len(inv)
    first = torch.full((int(inv.max()) + 1,), P)
    return first.scatter_reduce_(0, inv, torch.arange(P), "amin")


def _slab_plan(graph: Graph, b: int):
    B, H, N, M = graph.shape
    Qb, Kb = -(-N // b), -(-M // b)
    Bc, Hc = graph.slab(0, 0, expand=False).shape[:2]
    kept = torch.zeros(Bc, Hc, Qb, Kb, dtype=torch.bool)
    full = torch.zeros_like(kept)
    pid = torch.full(kept.shape, -1, dtype=torch.long)
    masks = []
    n_masks = 0
    for s, e in graph.row_chunks(multiple=b):
        edges = graph.slab(s, e, expand=False).cpu()  # (Bc, Hc, c, M)
        c = e - s
        edges = F.pad(edges, (0, Kb * b - M, 0, (-c) % b))
        blocks = edges.view(Bc, Hc, -1, b, Kb, b).permute(0, 1, 2, 4, 3, 5)  # (.., qb, Kb, b, b)
        if b % 8 == 0:
            anyb, allb = _any_all(edges, b, Kb)
        else:
            anyb, allb = blocks.any(-1).any(-1), blocks.all(-1).all(-1)
        rows = slice(s // b, s // b + anyb.shape[2])
        kept[:, :, rows] = anyb
        full[:, :, rows] = allb
        part = anyb & ~allb
        pid[:, :, rows] = _numbered(part, n_masks)
        masks.append(blocks[part])
        n_masks += masks[-1].shape[0]
    pm = torch.cat(masks) if masks else torch.zeros(0, b, b, dtype=torch.bool)
    return kept, full, pid, pm


def _any_all(edges: Tensor, b: int, Kb: int) -> tuple[Tensor, Tensor]:
    """Per ``b × b`` block of a padded, contiguous bool slab: any edge, every pair an edge.

    Eight booleans are read as one 64-bit word, so the reductions touch an eighth of the
    elements and run along contiguous memory.
    """
    B, H, rows, _ = edges.shape
    words = edges.contiguous().view(torch.uint8).view(torch.int64)
    words = words.view(B, H, rows // b, b, Kb, b // 8)
    anyb = (words != 0).any(-1).any(3)
    allb = (words == 0x0101010101010101).all(-1).all(3)
    return anyb, allb


def _rows_with_edges(plan: BlockPlan, row_hits: Tensor) -> Tensor:
    """``(B * H * Qb, b)`` bool: query rows with at least one allowed key.

    ``row_hits``: ``plan.partial_masks.any(-1)``.
    """
    B, H, Qb, Kb = plan.kept.shape
    b = plan.block_size
    out = plan.full.reshape(-1, Kb).any(-1, keepdim=True).expand(-1, b).clone()
    pid = plan.partial_id.reshape(-1, Kb)
    # Rows holding a full block are settled; the others look into their partial blocks.
    r, c = torch.nonzero((pid >= 0) & ~out[:, :1], as_tuple=True)
    if r.numel():
        hits = row_hits[pid[r, c]].to(torch.int32)  # (n, b)
        count = torch.zeros(out.shape, dtype=torch.int32).index_add_(0, r, hits)
        out |= count > 0
    return out


@dataclass
class _Heavy:
    """Query rows taken out of their block (see :func:`_split_heavy`)."""

    row: Tensor  # (h,) flat query row in ``(B * H * Qb * b)``
    bh: Tensor  # (h,) sequence-head of each row
    mask: Tensor  # (h, Kb * b) bool allowed keys of each row


def _split_heavy(
    plan: BlockPlan, row_hits: Tensor, ratio: int = 4
) -> tuple[BlockPlan, _Heavy | None]:
    """Take the few queries that widen their block (global tokens' rows) out of it.

    A query block keeping more than ``ratio`` times the median number of key blocks is split
    when at most a quarter of its rows need more than ``ratio`` times that block's median row
    count, and the other rows need at most ``1/ratio`` of its key blocks: the block then keeps
    only the blocks of its light rows, and the heavy rows are attended on their own, row by row.
    (The heavy rows are still computed in the block, over part of their keys, and overwritten.)
    """
    B, H, Qb, Kb = plan.kept.shape
    b, R = plan.block_size, B * H * Qb
    kept = plan.kept.reshape(R, Kb)
    counts = kept.sum(-1)
    live = counts[counts > 0]
    if live.numel() == 0:
        return plan, None
    cand = torch.nonzero(counts > ratio * max(int(live.median()), 1)).squeeze(-1)
    if cand.numel() == 0:
        return plan, None
    # Edges per (candidate block, kept key block, query row).
    full = plan.full.reshape(R, Kb)[cand]
    pid = plan.partial_id.reshape(R, Kb)[cand]
    hits = row_hits[pid.clamp(min=0)]  # (c, Kb, b)
    hits = (hits & (pid >= 0).unsqueeze(-1)) | full.unsqueeze(-1)
    per_row = hits.sum(1)  # (c, b) key blocks per query row
    # Lower median over the rows with an edge.
    srt = per_row.masked_fill(per_row == 0, Kb + 1).sort(-1).values
    mid = ((per_row > 0).sum(-1, keepdim=True) - 1).clamp(min=0) // 2
    heavy = per_row > ratio * srt.gather(1, mid).clamp(min=1)
    light_kept = (hits & ~heavy.unsqueeze(1)).any(-1)  # (c, Kb)
    split = heavy.any(-1) & (heavy.sum(-1) <= b // 4) & (light_kept.sum(-1) * ratio <= counts[cand])
    if not split.any():
        return plan, None
    cand, light_kept, heavy = cand[split], light_kept[split], heavy[split]
    full, pid = full[split], pid[split]
    # The heavy rows' key masks.
    c, r = torch.nonzero(heavy, as_tuple=True)
    pm = plan.partial_masks[pid[c].clamp(min=0), r.unsqueeze(-1)]  # (h, Kb, b)
    mask = torch.where(full[c].unsqueeze(-1), True, pm & (pid[c] >= 0).unsqueeze(-1))
    rows = cand[c] * b + r
    heavy_rows = _Heavy(rows, cand[c] // Qb, mask.reshape(len(rows), Kb * b))
    kept = kept.clone()
    kept[cand] = light_kept
    kept = kept.view(plan.kept.shape)
    light = BlockPlan(
        b,
        kept,
        plan.full & kept,
        torch.where(kept, plan.partial_id, -1),
        plan.partial_masks,
    )
    return light, heavy_rows


def _heavy_attend(
    q, kflat, vflat, heavy: _Heavy, out, normalizer, alpha, scale, max_entries: int
) -> None:
    """Attention of the heavy rows over their own keys, written into ``out`` ``(rows, Dv)``.

    The rows of many sequence-heads run in one batched call (rows padded to the most any
    sequence-head has), so the kernel spreads over threads.
    """
    D, Dv = q.shape[-1], vflat.shape[-1]
    S = heavy.mask.shape[1]
    keys, vals = kflat.view(-1, S, D), vflat.view(-1, S, Dv)
    Np = out.shape[0] // keys.shape[0]  # padded query rows per sequence-head
    dev = out.device
    ubh, counts = torch.unique_consecutive(heavy.bh, return_counts=True)  # rows come bh-major
    csum = torch.cumsum(counts, 0)
    ends = csum.tolist()
    rank = torch.arange(len(heavy.bh)) - (csum - counts).repeat_interleave(counts)  # within bh
    hmax = int(counts.max())
    per = max(1, max_entries // (hmax * S))
    for a in range(0, len(ubh), per):
        gb = ubh[a : a + per]
        nb, lo, hi = len(gb), (ends[a - 1] if a else 0), ends[a + len(gb) - 1]
        slot = torch.arange(nb).repeat_interleave(counts[a : a + nb]) * hmax + rank[lo:hi]
        rows = heavy.row[lo:hi]
        pos = torch.full((nb * hmax,), -1, dtype=torch.long).index_copy_(0, slot, rows)
        # Padding rows attend over every key and are dropped.
        qpos = gb.repeat_interleave(hmax) * q.shape[2] + (pos % Np).clamp(max=q.shape[2] - 1)
        qb = q.reshape(-1, D)[qpos.to(dev)].view(nb, hmax, D)
        allowed = torch.ones(nb * hmax, S, dtype=torch.bool).index_copy_(0, slot, heavy.mask[lo:hi])
        bias = torch.zeros(nb, hmax, S, dtype=q.dtype, device=dev)
        bias.masked_fill_(~allowed.view(nb, hmax, S).to(dev), float("-inf"))
        if int(gb[-1] - gb[0]) == nb - 1:  # consecutive sequence-heads: no copy
            kb, vb = keys[int(gb[0]) : int(gb[0]) + nb], vals[int(gb[0]) : int(gb[0]) + nb]
        else:
            kb, vb = keys[gb.to(dev)], vals[gb.to(dev)]
        res = _attend(qb, kb, vb, bias, normalizer, alpha, scale, bias)
        out.index_copy_(0, rows.to(dev), res.view(nb * hmax, Dv)[slot.to(dev)])


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    """``x`` with zero rows appended along dim 2 up to ``rows`` (no copy when none are needed)."""
    return x if x.shape[2] == rows else F.pad(x, (0, 0, 0, rows - x.shape[2]))


def _score_scale(D: int, normalizer: str, alpha: float) -> float:
    """Scale of ``q·k`` handed to :func:`_normalize_` (1.5-entmax wants the scores halved)."""
    return D**-0.5 * (0.5 if normalizer == "entmax" and alpha == 1.5 else 1.0)


def _normalize_(z: Tensor, normalizer: str, alpha: float) -> Tensor:
    """Attention weights from scores scaled by :func:`_score_scale` (``-inf`` = no key).

    In place where it can; rows with no allowed key are left to the caller.
    """
    if normalizer == "entmax" and alpha == 1.5:
        z = z.sub_(z.amax(-1, keepdim=True).clamp(min=torch.finfo(z.dtype).min))
        return _entmax15_(z)
    return attention_probs(z, normalizer, alpha)


def _attend(q, k, v, bias, normalizer, alpha, scale, scores=None) -> Tensor:
    """Batched attention of ``q`` ``(g, m, D)`` over ``k``/``v`` ``(g, s, ·)``.

    ``bias`` is additive (``-inf`` = no key), broadcastable to ``(g, m, s)``; ``q·k`` is
    scaled by ``scale`` (:func:`_score_scale`). Softmax runs the fused SDPA kernel; α-entmax
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
    return torch.bmm(_normalize_(z, normalizer, alpha), v)


def _entmax15_(x: Tensor, k: int = 64) -> Tensor:
    """In place: 1.5-entmax over the last dim of ``x`` = ``(z - max z) / 2`` (``-inf`` = no key).

    The threshold comes from the ``k`` largest entries (rows whose support fills them are redone
    with a wider prefix); the arithmetic is that of the sort-based algorithm, so the result is
    the same as ``entmax15`` over the allowed entries. Rows with no allowed key come out NaN.
    """
    from sparsebench.methods.gold import _entmax15_threshold

    S = x.shape[-1]
    flat = x.view(-1, S)
    tau = torch.empty(flat.shape[0], 1, dtype=x.dtype, device=x.device)
    todo = None  # all rows
    while True:
        kk = min(k, S)
        sub = flat if todo is None else flat[todo]
        top = torch.topk(sub, kk, dim=-1).values if kk < S else sub.sort(-1, True).values
        t, support = _entmax15_threshold(top)
        if todo is None:
            tau = t
        else:
            tau[todo] = t
        redo = (support[:, 0] == kk) & (kk < S)
        if not redo.any():
            break
        rows = torch.nonzero(redo).squeeze(-1)
        todo = rows if todo is None else todo[rows]
        k = 2 * kk
    flat.sub_(tau).clamp_(min=0).square_()
    return x


def _block(
    q,
    k,
    v,
    graph: Graph,
    normalizer,
    alpha,
    block_size: int,
    plan: BlockPlan | None = None,
    max_entries: int = 1 << 20,
) -> Tensor:
    """Each query block attends over its gathered kept key blocks.

    Query blocks are sorted by kept-block count and run in chunks of about ``max_entries``
    scores; heavy rows are split off first (:func:`_split_heavy`).
    """
    plan = plan or block_plan(graph, block_size)
    row_hits = plan.partial_masks.any(-1)  # (P, b) queries with an edge in each partial block
    plan, heavy = _split_heavy(plan, row_hits)
    b = plan.block_size
    B, H, N, D = q.shape
    Dv = v.shape[-1]
    Qb, Kb = plan.kept.shape[2:]
    R = B * H * Qb
    dev = v.device
    scale = _score_scale(D, normalizer, alpha)

    # Per query block (row), its kept key blocks in order and the mask of each slot: a
    # partial block's own, 0 = full block, P + 1 = no block (padding of short rows).
    kept = plan.kept.reshape(R, Kb)
    counts = kept.sum(-1)
    order = torch.argsort(counts, stable=True)
    sorted_counts = counts[order].tolist()
    start = bisect.bisect_right(sorted_counts, 0)  # rows with no kept block stay zero
    if start == R:
        return torch.zeros(B, H, N, Dv, dtype=v.dtype, device=dev)
    empty_rows = order[:start]
    order = order[start:]
    sorted_counts = sorted_counts[start:]
    width = sorted_counts[-1]
    idx = torch.argsort((~kept[order]).to(torch.int8), dim=-1, stable=True)[:, :width]
    P = plan.partial_masks.shape[0]
    full = plan.full.reshape(R, Kb)[order].gather(1, idx)
    which = torch.where(full, P, plan.partial_id.reshape(R, Kb)[order].gather(1, idx))
    which = torch.where(torch.arange(width) < counts[order].view(-1, 1), which, P + 1).to(dev)
    blocks = (order // Qb * Kb).view(-1, 1).add(idx).to(dev)  # flat key-block ids
    order_d = order.to(dev)
    live = _rows_with_edges(plan, row_hits).to(dev)[order_d]
    all_live = bool(live.all())
    allowed = torch.cat(
        [
            plan.partial_masks,
            torch.ones(1, b, b, dtype=torch.bool),
            torch.zeros(1, b, b, dtype=torch.bool),
        ]
    ).to(dev)
    masks = torch.where(allowed, 0.0, torch.tensor(float("-inf"), dtype=q.dtype, device=dev))
    # Key columns are kept in units of ``u`` (a block's unit with no edge for any of its
    # queries is dropped: a global token's column costs a unit, not a block).
    u = 16 if b % 16 == 0 and b > 16 else b
    nu = b // u
    mask_units = masks.view(-1, u)  # row (w * b + query) * nu + unit
    unit_live = allowed.any(1).view(-1, nu, u).any(-1)  # (P + 2, nu)
    ar_b = torch.arange(b, device=dev).view(1, -1, 1)
    ar_u = torch.arange(u, device=dev)

    qblk = _pad_rows(q, Qb * b).reshape(R, b * D)
    out = torch.empty(R, b, Dv, dtype=v.dtype, device=dev)
    if start:  # query blocks with no kept block
        out[empty_rows.to(dev)] = 0.0
    kflat = _pad_rows(k, Kb * b).reshape(-1, D)
    vflat = _pad_rows(v, Kb * b).reshape(-1, Dv)
    kblk, vblk = kflat.view(-1, b * D), vflat.view(-1, b * Dv)
    # Work buffers reused by every chunk (fresh large allocations would page-fault each time).
    cap = max(max_entries, b * b * width)
    kbuf = torch.empty(cap // b * D, dtype=k.dtype, device=dev)
    vbuf = torch.empty(cap // b * Dv, dtype=v.dtype, device=dev)
    zbuf = torch.empty(cap, dtype=q.dtype, device=dev)
    qbuf = torch.empty(max_entries // b * D + b * D, dtype=q.dtype, device=dev)
    lo, R_live = 0, len(order)
    while lo < R_live:
        hi = lo + 1
        while hi < R_live and (hi - lo + 1) * sorted_counts[hi] * b * b <= max_entries:
            hi += 1
        r, kmax = hi - lo, sorted_counts[hi - 1]
        rows = order_d[lo:hi]
        qc = torch.index_select(qblk, 0, rows, out=qbuf[: r * b * D].view(r, -1)).view(r, b, D)
        wh = which[lo:hi, :kmax]
        blk = blocks[lo:hi, :kmax]
        ok = unit_live[wh].view(r, kmax * nu)
        cnt = ok.sum(-1)
        U = int(cnt.max())
        if u < b and U * u <= 0.85 * kmax * b:
            # Live units only, key by key; each query's mask row gathered unit by unit.
            pos = torch.argsort((~ok).to(torch.int8), dim=-1, stable=True)[:, :U]
            slot, unit = pos // nu, pos % nu
            pad = torch.arange(U, device=dev) >= cnt.view(-1, 1)
            wk = wh.gather(1, slot).masked_fill_(pad, P + 1)
            kx, vx = kflat, vflat
            ix = ((blk.gather(1, slot) * b + unit * u).unsqueeze(-1) + ar_u).view(-1)
            at = ((wk.unsqueeze(1) * b + ar_b) * nu + unit.unsqueeze(1)).view(-1)
            S = U * u
            bias = torch.index_select(mask_units, 0, at, out=zbuf[: r * b * S].view(-1, u))
        else:
            # Whole blocks gathered as rows of b keys (far fewer indices than key by key).
            kx, vx, ix = kblk, vblk, blk.reshape(-1)
            at = (wh.unsqueeze(1) * b + ar_b).view(-1)
            S = kmax * b
            bias = torch.index_select(masks.view(-1, b), 0, at, out=zbuf[: r * b * S].view(-1, b))
        bias = bias.view(r, b, S)  # additive mask [row, query, key]
        kg = torch.index_select(kx, 0, ix, out=kbuf[: r * S * D].view(len(ix), -1)).view(r, S, D)
        vg = torch.index_select(vx, 0, ix, out=vbuf[: r * S * Dv].view(len(ix), -1))
        vg = vg.view(r, S, Dv)
        res = _attend(qc, kg, vg, bias, normalizer, alpha, scale, scores=bias)
        if not all_live:
            res = torch.where(live[lo:hi].unsqueeze(-1), res, 0.0)
        out.index_copy_(0, rows, res)
        lo = hi
    if heavy is not None:
        out_rows = out.view(R * b, Dv)
        _heavy_attend(q, kflat, vflat, heavy, out_rows, normalizer, alpha, scale, max_entries)
    return out.view(B, H, Qb * b, Dv)[:, :, :N]


# -- FlexAttention (softmax) ----------------------------------------------------------------
@cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(
    q, k, v, graph: Graph, block_size: int, plan: BlockPlan | None = None, compiled: bool = True
) -> Tensor:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    plan = plan or block_plan(graph, block_size)
    b = plan.block_size
    B, H, N, _ = q.shape
    M = k.shape[2]
    partial = plan.kept & ~plan.full

    def layout(mask: Tensor) -> tuple[Tensor, Tensor]:
        num = mask.sum(-1).to(torch.int32)
        idx = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return num.contiguous(), idx.contiguous()

    kv_num, kv_idx = layout(partial)
    full_num, full_idx = layout(plan.full)
    pid = plan.partial_id.to(q.device)
    pmask = plan.partial_masks.to(q.device)

    def mask_mod(bi, hi, qi, ki):
        p = pid[bi, hi, qi // b, ki // b]
        return pmask[p.clamp(min=0), qi % b, ki % b] & (p >= 0)

    bm = BlockMask.from_kv_blocks(
        kv_num.to(q.device),
        kv_idx.to(q.device),
        full_num.to(q.device),
        full_idx.clone().to(q.device),
        BLOCK_SIZE=b,
        mask_mod=mask_mod,
        seq_lengths=(N, M),
    )
    fn = _compiled_flex() if compiled else flex_attention
    out = fn(q, k, v, block_mask=bm, scale=q.shape[-1] ** -0.5)
    # Rows with no allowed key: flex returns zeros there already; make it explicit.
    empty = ~plan.kept.any(-1)  # (B, H, Qb) blocks with nothing at all
    if empty.any():
        rows = empty.repeat_interleave(b, dim=-1)[..., :N].to(out.device)
        out = out.masked_fill(rows.unsqueeze(-1), 0.0)
    return out


# -- grouped --------------------------------------------------------------------------------
def _xformers_attend(qc, kc, vc, q_seqlen, kv_seqlen, scale) -> Tensor:
    """Softmax attention of packed groups: query group ``i`` over key group ``i``.

    xformers ``memory_efficient_attention`` with a ``BlockDiagonalMask`` (CUDA only).
    """
    import logging

    logging.getLogger("xformers").setLevel(logging.ERROR)
    import xformers.ops as xops
    from xformers.ops.fmha.attn_bias import BlockDiagonalMask

    bias = BlockDiagonalMask.from_seqlens(q_seqlen, kv_seqlen)
    out = xops.memory_efficient_attention(
        qc[None, :, None], kc[None, :, None], vc[None, :, None], attn_bias=bias, scale=scale
    )
    return out[0, :, 0]


def _grouped(
    q, k, v, graph: Graph, normalizer, alpha, max_pairs: int = 1 << 20, attend=None
) -> Tensor:
    """Queries and keys sorted by group; each group attends within itself.

    Softmax on CUDA with xformers installed (non-causal) runs every group in one
    ``memory_efficient_attention`` call over the packed groups (``attend`` overrides that
    kernel, e.g. for tests); otherwise groups of similar size are padded into batches of about
    ``max_pairs`` scores.
    """
    if auto_path(graph) != "grouped":
        raise NotImplementedError("the grouped path needs a graph of exactly one Groups slot")
    g = graph.parts[0]
    B, H, N, D = q.shape
    M, Dv = k.shape[2], v.shape[-1]
    lengths = graph.lengths if graph.lengths is not None else torch.full((B,), min(N, M))
    # Group bookkeeping on the CPU; index tensors move to the data's device where used.
    qg = g.q_groups[..., 0].expand(B, H, N).reshape(B * H, N).cpu()
    kg = g.k_groups[..., 0].expand(B, H, M).reshape(B * H, M).cpu()
    L = lengths.repeat_interleave(H).view(-1, 1)
    qg = torch.where(torch.arange(N).view(1, -1) < L, qg, -1)
    kg = torch.where(torch.arange(M).view(1, -1) < L, kg, -1)
    span = int(max(qg.max(), kg.max())) + 2
    bh = torch.arange(B * H).view(-1, 1)
    # One id per (sequence-head, group); tokens in no group (or padded) are dropped.
    qid = torch.where(qg >= 0, bh * span + qg, -1).reshape(-1)
    kid = torch.where(kg >= 0, bh * span + kg, -1).reshape(-1)
    qsel = torch.nonzero(qid >= 0).squeeze(-1)
    ksel = torch.nonzero(kid >= 0).squeeze(-1)
    qs = qsel[torch.argsort(qid[qsel], stable=True)]
    ks = ksel[torch.argsort(kid[ksel], stable=True)]
    ids, qcount = torch.unique_consecutive(qid[qs], return_counts=True)
    kids, kcount = torch.unique_consecutive(kid[ks], return_counts=True)
    # Keep groups present on both sides.
    common = torch.isin(ids, kids)
    kpos = torch.searchsorted(kids, ids)
    qstart = torch.cumsum(qcount, 0) - qcount
    kstart = torch.cumsum(kcount, 0) - kcount
    scale = _score_scale(D, normalizer, alpha)
    qflat = q.reshape(B * H * N, D)
    kflat = k.reshape(B * H * M, D)
    vflat = v.reshape(B * H * M, Dv)
    # One scratch row past the end takes the outputs of padded queries.
    out = torch.zeros(B * H * N + 1, Dv, dtype=v.dtype, device=v.device)
    dev = v.device
    if (
        attend is None
        and normalizer == "softmax"
        and not graph.causal
        and q.is_cuda
        and importlib.util.find_spec("xformers") is not None
    ):
        attend = _xformers_attend
    if attend is not None:
        if graph.causal or normalizer != "softmax":
            raise NotImplementedError("packed groups take non-causal softmax only")
        shared = ids[common]
        qsel = qs[torch.isin(qid[qs], shared)].to(dev)
        ksel = ks[torch.isin(kid[ks], shared)].to(dev)
        res = attend(
            qflat[qsel] * scale,
            kflat[ksel],
            vflat[ksel],
            qcount[common].tolist(),
            kcount[kpos[common]].tolist(),
            1.0,
        )
        out[qsel] = res.to(out.dtype)
        return out[:-1].view(B, H, N, Dv)
    gi = torch.nonzero(common).squeeze(-1)
    nq = qcount[gi]
    nk = kcount[kpos[gi]]
    order = gi[torch.argsort(nq * nk, stable=True)]
    pos = 0
    while pos < len(order):
        # A chunk of groups of similar size, padded to its largest.
        chunk = [int(order[pos])]
        mq, mk = int(qcount[chunk[0]]), int(kcount[kpos[chunk[0]]])
        pos += 1
        while pos < len(order):
            c = int(order[pos])
            tq, tk = max(mq, int(qcount[c])), max(mk, int(kcount[kpos[c]]))
            if (len(chunk) + 1) * tq * tk > max_pairs:
                break
            chunk.append(c)
            mq, mk = tq, tk
            pos += 1
        ch = torch.tensor(chunk)
        ar_q = torch.arange(mq).view(1, -1)
        ar_k = torch.arange(mk).view(1, -1)
        ok_q = ar_q < qcount[ch].view(-1, 1)
        ok_k = ar_k < kcount[kpos[ch]].view(-1, 1)
        qi = qs[(qstart[ch].view(-1, 1) + ar_q).clamp(max=len(qs) - 1)]  # flat query index
        ki = ks[(kstart[kpos[ch]].view(-1, 1) + ar_k).clamp(max=len(ks) - 1)]
        # Padded query rows are computed and dropped; padded keys are masked (additive mask:
        # the fused kernel takes it as is).
        allowed = ok_k.unsqueeze(1)  # (g, 1, mk)
        if graph.causal:
            allowed = allowed & ((ki % M).unsqueeze(1) <= (qi % N).unsqueeze(-1))
        dst = torch.where(ok_q, qi, B * H * N)  # padded queries write the scratch row
        qi, ki, dst, allowed = (t.to(dev) for t in (qi, ki, dst, allowed))
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=dev)
        bias.masked_fill_(~allowed, float("-inf"))
        g = len(chunk)
        qc = torch.index_select(qflat, 0, qi.view(-1)).view(g, mq, D)
        kc = torch.index_select(kflat, 0, ki.view(-1)).view(g, mk, D)
        vc = torch.index_select(vflat, 0, ki.view(-1)).view(g, mk, Dv)
        res = _attend(qc, kc, vc, bias, normalizer, alpha, scale)
        if graph.causal:  # a query with no allowed key outputs zeros
            res = torch.where(allowed.any(-1, keepdim=True), res, 0.0)
        out.index_copy_(0, dst.view(-1), res.reshape(-1, Dv))
    return out[:-1].view(B, H, N, Dv)


def auto_path(graph: Graph) -> Literal["grouped", "block"]:
    """The path ``execute(..., path="auto")`` takes for ``graph``.

    ``grouped`` for a graph that is one slot of :class:`~sparsebench.methods.Groups`, else
    ``block``.
    """
    g = graph.find(Groups)
    one_slot = len(graph.parts) == 1 and len(g) == 1 and g[0].q_groups.shape[-1] == 1
    return "grouped" if one_slot else "block"


def execute(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    *,
    normalizer: Normalizer = "entmax",
    alpha: float = 1.5,
    path: Literal["auto", "dense", "block", "flex", "grouped"] = "auto",
    block_size: int = 128,
    plan: BlockPlan | None = None,
) -> Tensor:
    """Attention of ``q`` over ``k``/``v`` restricted to the edges of ``graph``.

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values ``(B, H, M, Dv)``.
        graph: the allowed edges (its lengths and causality apply).
        normalizer: ``"entmax"`` (α-entmax, exact over the allowed entries) or ``"softmax"``.
        alpha: entmax α.
        path: ``"auto"`` picks ``grouped`` for one-slot group graphs, else ``block``.
        block_size: kernel block size for ``block`` and ``flex``.
        plan: a precomputed :func:`block_plan` (so timing can separate layout building).

    Returns:
        ``(B, H, N, Dv)``; rows of queries with no allowed key are zero.
    """
    check_qk(q, k, lengths=graph.lengths, causal=graph.causal)
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v {tuple(v.shape)} must match k {tuple(k.shape)} in (B, H, M)")
    if graph.shape != (*q.shape[:3], k.shape[2]):
        raise ValueError(f"graph shape {graph.shape} does not match q/k {tuple(q.shape)}")
    if path == "auto":
        path = auto_path(graph)
    with torch.no_grad():
        if path == "dense":
            return _dense(q, k, v, graph, normalizer, alpha)
        if path == "block":
            return _block(q, k, v, graph, normalizer, alpha, block_size, plan)
        if path == "grouped":
            return _grouped(q, k, v, graph, normalizer, alpha)
        if path == "flex":
            if normalizer != "softmax":
                raise NotImplementedError("FlexAttention normalises with softmax only")
            return _flex(q, k, v, graph, block_size, plan)
    raise ValueError(f"unknown path {path!r}; use auto, dense, block, flex or grouped")
