"""Attention restricted to a graph, by paths that really skip the work the graph excludes.

``execute(q, k, v, graph, normalizer=..., path=...)``:

* ``"dense"`` — the reference: scores of all pairs, masked to the graph (row slabs, so memory
  stays bounded), normalised, times ``v``.
* ``"block"`` — the graph becomes a block layout (kernel block size 64 or 128): for each query
  block, the key blocks holding an edge, split into *full* blocks (every pair an edge) and
  *partial* ones (a per-block bit mask). The kept key blocks of a query block are gathered and
  normalised over the kept entries only, so α-entmax thresholds are found on those entries.
  Query blocks are processed in groups of similar kept-block counts, so a few dense rows (global
  tokens) do not inflate the work of the others.
* ``"flex"`` — softmax only: the same block layout fed to FlexAttention
  (``BlockMask.from_kv_blocks``), compiled once per process.
* ``"grouped"`` — for graphs that are one set of groups (buckets or clusters: one slot of a
  :class:`~sparsebench.methods.Groups` part): queries and keys are sorted by group and each
  group attends within itself.

All paths give the same result as ``"dense"`` on the same graph; a query with no allowed key
outputs zeros (it never falls back to full attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsebench.methods import Graph, Groups, attention_logits, attention_probs, check_qk

__all__ = ["BlockPlan", "block_plan", "execute"]

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
        partial_masks: ``(P, b, b)`` bool edges inside each partial block.
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
    """Turn ``graph`` into a block layout, a slab of query blocks at a time.

    Structure shared by every head or sequence (bands, global tokens) is laid out once and
    broadcast, and heads that share a partial block share its mask.
    """
    B, H, N, M = graph.shape
    b = block_size
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
        ids = torch.full(part.shape, -1, dtype=torch.long)
        ids[part] = torch.arange(n_masks, n_masks + int(part.sum()))
        pid[:, :, rows] = ids
        masks.append(blocks[part])
        n_masks += masks[-1].shape[0]
    pm = torch.cat(masks) if masks else torch.zeros(0, b, b, dtype=torch.bool)

    def spread(t: Tensor) -> Tensor:
        return t.expand(B, H, Qb, Kb).contiguous()

    return BlockPlan(b, spread(kept), spread(full), spread(pid), pm)


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


def _block_rows(plan: BlockPlan):
    """Flattened query blocks with their kept key blocks, sorted by count."""
    B, H, Qb, Kb = plan.kept.shape
    counts = plan.kept.sum(-1).reshape(-1)  # (R,)
    order = torch.argsort(counts, stable=True)
    return counts, order


def _block(
    q,
    k,
    v,
    graph: Graph,
    normalizer,
    alpha,
    block_size: int,
    plan: BlockPlan | None = None,
    rows_per_chunk: int = 64,
) -> Tensor:
    plan = plan or block_plan(graph, block_size)
    b = plan.block_size
    B, H, N, D = q.shape
    M, Dv = k.shape[2], v.shape[-1]
    Qb, Kb = plan.kept.shape[2:]
    scale = D**-0.5
    qp = F.pad(q * scale, (0, 0, 0, Qb * b - N)).reshape(B * H * Qb, b, D)
    kp = F.pad(k, (0, 0, 0, Kb * b - M)).reshape(B * H, Kb, b, D)
    vp = F.pad(v, (0, 0, 0, Kb * b - M)).reshape(B * H, Kb, b, Dv)
    out = torch.zeros(B * H * Qb, b, Dv, dtype=v.dtype, device=v.device)
    kept = plan.kept.reshape(B * H * Qb, Kb)
    full = plan.full.reshape(B * H * Qb, Kb)
    pid = plan.partial_id.reshape(B * H * Qb, Kb)
    counts, order = _block_rows(plan)
    bh_of_row = torch.arange(B * H * Qb) // Qb
    ones = torch.ones(b, b, dtype=torch.bool)
    zero = torch.zeros(b, b, dtype=torch.bool)
    masks = torch.cat([plan.partial_masks, ones[None], zero[None]])  # -2: full, -1: padding
    for start in range(0, len(order), rows_per_chunk):
        rows = order[start : start + rows_per_chunk]
        kmax = int(counts[rows].max())
        if kmax == 0:
            continue
        # Kept key-block indices of each row, padded with block 0 (masked out below).
        idx = torch.argsort((~kept[rows]).to(torch.int8), dim=-1, stable=True)[:, :kmax]
        valid_slot = torch.arange(kmax).view(1, -1) < counts[rows].view(-1, 1)
        bh = bh_of_row[rows]
        kg = kp[bh.view(-1, 1), idx]  # (r, kmax, b, D)
        vg = vp[bh.view(-1, 1), idx]  # (r, kmax, b, Dv)
        which = torch.where(full[rows.view(-1, 1), idx], len(masks) - 2, pid[rows.view(-1, 1), idx])
        which = torch.where(valid_slot, which, len(masks) - 1)
        allowed = masks[which]  # (r, kmax, b, b): [slot, query, key]
        allowed = allowed.permute(0, 2, 1, 3).reshape(len(rows), b, kmax * b)
        z = torch.einsum("rqd,rskd->rqsk", qp[rows], kg).reshape(len(rows), b, kmax * b)
        z = z.masked_fill(~allowed.to(z.device), float("-inf"))
        p = attention_probs(z, normalizer, alpha)
        out[rows] = p @ vg.reshape(len(rows), kmax * b, Dv)
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
def _grouped(q, k, v, graph: Graph, normalizer, alpha, max_pairs: int = 1 << 22) -> Tensor:
    groups = graph.find(Groups)
    if len(graph.parts) != 1 or len(groups) != 1 or groups[0].q_groups.shape[-1] != 1:
        raise NotImplementedError("the grouped path needs a graph of exactly one Groups slot")
    g = groups[0]
    B, H, N, D = q.shape
    M, Dv = k.shape[2], v.shape[-1]
    lengths = graph.lengths if graph.lengths is not None else torch.full((B,), min(N, M))
    qg = g.q_groups[..., 0].expand(B, H, N).reshape(B * H, N)
    kg = g.k_groups[..., 0].expand(B, H, M).reshape(B * H, M)
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
    qflat = (q * D**-0.5).reshape(B * H * N, D)
    kflat = k.reshape(B * H * M, D)
    vflat = v.reshape(B * H * M, Dv)
    out = torch.zeros(B * H * N, Dv, dtype=v.dtype, device=v.device)
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
        # Padded query rows are computed and dropped; padded keys are masked.
        allowed = ok_k.unsqueeze(1)  # (g, 1, mk)
        if graph.causal:
            allowed = allowed & ((ki % M).unsqueeze(1) <= (qi % N).unsqueeze(-1))
        if normalizer == "softmax":
            # The fused kernel; a row with no allowed key (causal) outputs zeros.
            res = F.scaled_dot_product_attention(
                qflat[qi].unsqueeze(1),
                kflat[ki].unsqueeze(1),
                vflat[ki].unsqueeze(1),
                attn_mask=allowed.unsqueeze(1),
                scale=1.0,
            ).squeeze(1)
            if graph.causal:
                res = torch.where(allowed.any(-1, keepdim=True), res, 0.0)
        else:
            z = torch.einsum("gqd,gkd->gqk", qflat[qi], kflat[ki])
            z = z.masked_fill(~allowed, float("-inf"))
            res = attention_probs(z, normalizer, alpha) @ vflat[ki]  # (g, mq, Dv)
        out[qi[ok_q]] = res[ok_q]
    return out.view(B, H, N, Dv)


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
        g = graph.find(Groups)
        one_slot = len(graph.parts) == 1 and len(g) == 1 and g[0].q_groups.shape[-1] == 1
        path = "grouped" if one_slot else "block"
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
