"""The block path: each query block attends over its gathered kept key blocks.

The graph's block layout (:class:`~sparsebench.bench.kernels.plan.BlockPlan`) gives, for each
query block, the key blocks holding an edge, split into *full* blocks (every pair an edge) and
*partial* ones (a per-block bit mask). The kept key blocks of a query block are gathered and
normalised over the kept entries only, so α-entmax thresholds are found on those entries.
Query blocks are processed in groups of similar kept-block counts; key columns are gathered in
units of 16, so a block holding only a global token's column costs one unit; the few queries
that would widen their block to many more key blocks than its other rows (a global token's
row) are taken out and attended row by row.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .normalize import attend, score_scale
from .plan import BlockPlan

__all__ = ["HeavyRows", "block_attention", "split_heavy"]


def _rows_with_edges(plan: BlockPlan, row_hits: Tensor) -> Tensor:
    """``(B * H * Qb, b)`` bool: query rows with at least one allowed key.

    ``row_hits``: ``plan.partial_masks.any(-1)``.
    """
    B, H, Qb, Kb = plan.kept.shape
    b = plan.block_size
    out = plan.full.reshape(-1, Kb).any(-1, keepdim=True).expand(-1, b).clone()
    partial_id = plan.partial_id.reshape(-1, Kb)
    # Rows holding a full block are settled; the others look into their partial blocks.
    r, c = torch.nonzero((partial_id >= 0) & ~out[:, :1], as_tuple=True)
    if r.numel():
        hits = row_hits[partial_id[r, c]].to(torch.int32)  # (n, b)
        count = torch.zeros(out.shape, dtype=torch.int32).index_add_(0, r, hits)
        out |= count > 0
    return out


@dataclass
class HeavyRows:
    """Query rows taken out of their block (see :func:`split_heavy`).

    Attributes:
        row: ``(h,)`` flat query row in ``(B * H * Qb * b)``.
        seq_head: ``(h,)`` sequence-head (``B * H`` index) of each row.
        mask: ``(h, Kb * b)`` bool allowed keys of each row.
    """

    row: Tensor
    seq_head: Tensor
    mask: Tensor


def split_heavy(
    plan: BlockPlan, row_hits: Tensor, ratio: int = 4
) -> tuple[BlockPlan, HeavyRows | None]:
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
    partial_id = plan.partial_id.reshape(R, Kb)[cand]
    hits = row_hits[partial_id.clamp(min=0)]  # (c, Kb, b)
    hits = (hits & (partial_id >= 0).unsqueeze(-1)) | full.unsqueeze(-1)
    per_row = hits.sum(1)  # (c, b) key blocks per query row
    # Lower median over the rows with an edge.
    ranked = per_row.masked_fill(per_row == 0, Kb + 1).sort(-1).values
    mid = ((per_row > 0).sum(-1, keepdim=True) - 1).clamp(min=0) // 2
    heavy = per_row > ratio * ranked.gather(1, mid).clamp(min=1)
    light_kept = (hits & ~heavy.unsqueeze(1)).any(-1)  # (c, Kb)
    split = heavy.any(-1) & (heavy.sum(-1) <= b // 4) & (light_kept.sum(-1) * ratio <= counts[cand])
    if not split.any():
        return plan, None
    cand, light_kept, heavy = cand[split], light_kept[split], heavy[split]
    full, partial_id = full[split], partial_id[split]
    # The heavy rows' key masks.
    c, r = torch.nonzero(heavy, as_tuple=True)
    masks = plan.partial_masks[partial_id[c].clamp(min=0), r.unsqueeze(-1)]  # (h, Kb, b)
    mask = torch.where(full[c].unsqueeze(-1), True, masks & (partial_id[c] >= 0).unsqueeze(-1))
    rows = cand[c] * b + r
    heavy_rows = HeavyRows(rows, cand[c] // Qb, mask.reshape(len(rows), Kb * b))
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
    q, kflat, vflat, heavy: HeavyRows, out, normalizer, alpha, scale, max_entries: int
) -> None:
    """Attention of the heavy rows over their own keys, written into ``out`` ``(rows, Dv)``.

    The rows of many sequence-heads run in one batched call (rows padded to the most any
    sequence-head has), so the kernel spreads over threads.
    """
    D, Dv = q.shape[-1], vflat.shape[-1]
    S = heavy.mask.shape[1]  # keys per sequence-head (padded to whole blocks)
    keys, vals = kflat.view(-1, S, D), vflat.view(-1, S, Dv)
    Np = out.shape[0] // keys.shape[0]  # padded query rows per sequence-head
    dev = out.device
    # Rows come sequence-head-major.
    heads, counts = torch.unique_consecutive(heavy.seq_head, return_counts=True)
    csum = torch.cumsum(counts, 0)
    ends = csum.tolist()
    rank = torch.arange(len(heavy.seq_head)) - (csum - counts).repeat_interleave(counts)
    most = int(counts.max())
    per_call = max(1, max_entries // (most * S))
    for a in range(0, len(heads), per_call):
        batch = heads[a : a + per_call]
        nb, lo, hi = len(batch), (ends[a - 1] if a else 0), ends[a + len(batch) - 1]
        slot = torch.arange(nb).repeat_interleave(counts[a : a + nb]) * most + rank[lo:hi]
        rows = heavy.row[lo:hi]
        pos = torch.full((nb * most,), -1, dtype=torch.long).index_copy_(0, slot, rows)
        # Padding rows attend over every key and are dropped.
        qpos = batch.repeat_interleave(most) * q.shape[2] + (pos % Np).clamp(max=q.shape[2] - 1)
        qb = q.reshape(-1, D)[qpos.to(dev)].view(nb, most, D)
        allowed = torch.ones(nb * most, S, dtype=torch.bool).index_copy_(0, slot, heavy.mask[lo:hi])
        bias = torch.zeros(nb, most, S, dtype=q.dtype, device=dev)
        bias.masked_fill_(~allowed.view(nb, most, S).to(dev), float("-inf"))
        first = int(batch[0])
        if int(batch[-1]) - first == nb - 1:  # consecutive sequence-heads: no copy
            kb, vb = keys[first : first + nb], vals[first : first + nb]
        else:
            kb, vb = keys[batch.to(dev)], vals[batch.to(dev)]
        res = attend(qb, kb, vb, bias, normalizer, alpha, scale, bias)
        out.index_copy_(0, rows.to(dev), res.view(nb * most, Dv)[slot.to(dev)])


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    """``x`` with zero rows appended along dim 2 up to ``rows`` (no copy when none are needed)."""
    return x if x.shape[2] == rows else F.pad(x, (0, 0, 0, rows - x.shape[2]))


def block_attention(
    q, k, v, plan: BlockPlan, normalizer, alpha, max_entries: int = 1 << 20
) -> Tensor:
    """Each query block attends over its gathered kept key blocks.

    Query blocks are sorted by kept-block count and run in chunks of about ``max_entries``
    scores; heavy rows are split off first (:func:`split_heavy`). One function, longer than
    usual: the work buffers, the per-chunk gathers and the in-place normalisation share state
    that splitting would have to pass around on every chunk.
    """
    row_hits = plan.partial_masks.any(-1)  # (P, b) queries with an edge in each partial block
    plan, heavy = split_heavy(plan, row_hits)
    b = plan.block_size
    B, H, N, D = q.shape
    Dv = v.shape[-1]
    Qb, Kb = plan.kept.shape[2:]
    R = B * H * Qb
    dev = v.device
    scale = score_scale(D, normalizer, alpha)

    # Per query block (row), its kept key blocks in order and the mask of each slot: a
    # partial block's own, P = full block, P + 1 = no block (padding of short rows).
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
    # Key columns are kept in units of ``unit`` keys (a block's unit with no edge for any of
    # its queries is dropped: a global token's column costs a unit, not a block).
    unit = 16 if b % 16 == 0 and b > 16 else b
    per_block = b // unit
    mask_units = masks.view(-1, unit)  # row (w * b + query) * per_block + unit index
    unit_live = allowed.any(1).view(-1, per_block, unit).any(-1)  # (P + 2, per_block)
    ar_b = torch.arange(b, device=dev).view(1, -1, 1)
    ar_unit = torch.arange(unit, device=dev)

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
    lo, n_live = 0, len(order)
    while lo < n_live:
        hi = lo + 1
        while hi < n_live and (hi - lo + 1) * sorted_counts[hi] * b * b <= max_entries:
            hi += 1
        n_rows, kmax = hi - lo, sorted_counts[hi - 1]
        rows = order_d[lo:hi]
        qbox = qbuf[: n_rows * b * D].view(n_rows, -1)
        qc = torch.index_select(qblk, 0, rows, out=qbox).view(n_rows, b, D)
        wh = which[lo:hi, :kmax]
        blk = blocks[lo:hi, :kmax]
        ok = unit_live[wh].view(n_rows, kmax * per_block)
        cnt = ok.sum(-1)
        max_units = int(cnt.max())
        if unit < b and max_units * unit <= 0.85 * kmax * b:
            # Live units only, key by key; each query's mask row gathered unit by unit.
            pos = torch.argsort((~ok).to(torch.int8), dim=-1, stable=True)[:, :max_units]
            slot, unit_idx = pos // per_block, pos % per_block
            pad = torch.arange(max_units, device=dev) >= cnt.view(-1, 1)
            wk = wh.gather(1, slot).masked_fill_(pad, P + 1)
            kx, vx = kflat, vflat
            ix = ((blk.gather(1, slot) * b + unit_idx * unit).unsqueeze(-1) + ar_unit).view(-1)
            at = ((wk.unsqueeze(1) * b + ar_b) * per_block + unit_idx.unsqueeze(1)).view(-1)
            S = max_units * unit
            zbox = zbuf[: n_rows * b * S].view(-1, unit)
            bias = torch.index_select(mask_units, 0, at, out=zbox)
        else:
            # Whole blocks gathered as rows of b keys (far fewer indices than key by key).
            kx, vx, ix = kblk, vblk, blk.reshape(-1)
            at = (wh.unsqueeze(1) * b + ar_b).view(-1)
            S = kmax * b
            zbox = zbuf[: n_rows * b * S].view(-1, b)
            bias = torch.index_select(masks.view(-1, b), 0, at, out=zbox)
        bias = bias.view(n_rows, b, S)  # additive mask [row, query, key]
        kbox = kbuf[: n_rows * S * D].view(len(ix), -1)
        kg = torch.index_select(kx, 0, ix, out=kbox).view(n_rows, S, D)
        vbox = vbuf[: n_rows * S * Dv].view(len(ix), -1)
        vg = torch.index_select(vx, 0, ix, out=vbox).view(n_rows, S, Dv)
        res = attend(qc, kg, vg, bias, normalizer, alpha, scale, scores=bias)
        if not all_live:
            res = torch.where(live[lo:hi].unsqueeze(-1), res, 0.0)
        out.index_copy_(0, rows, res)
        lo = hi
    if heavy is not None:
        out_rows = out.view(R * b, Dv)
        _heavy_attend(q, kflat, vflat, heavy, out_rows, normalizer, alpha, scale, max_entries)
    return out.view(B, H, Qb * b, Dv)[:, :, :N]
