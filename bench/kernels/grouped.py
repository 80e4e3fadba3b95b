"""The grouped path: queries and keys sorted by group, each group attending within itself.

For graphs that are one set of groups (buckets or clusters: one slot of a
:class:`~sparsebench.methods.Groups` part). Softmax on CUDA with xformers installed
(non-causal) runs every group in one ``memory_efficient_attention`` call over the packed groups;
otherwise groups of similar size are padded into batches.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
from torch import Tensor

from sparsebench.methods import Graph, Groups, real_tokens

from .normalize import attend as attend_batched
from .normalize import score_scale

__all__ = ["grouped_attention", "single_groups"]


def single_groups(graph: Graph) -> Groups | None:
    """The graph's only part when it is one slot of :class:`~sparsebench.methods.Groups`."""
    found = graph.find(Groups)
    one_slot = len(graph.parts) == 1 and len(found) == 1 and found[0].q_groups.shape[-1] == 1
    return found[0] if one_slot else None


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


@dataclass
class _Sorted:
    """Tokens of every (sequence-head, group) in sorted order, on the CPU.

    Flat token ids run over ``B * H * N`` queries and ``B * H * M`` keys; a group id is
    ``sequence_head * span + group``. ``qs`` / ``ks`` list the grouped tokens by group id;
    ``ids`` / ``kids`` are the group ids present, ``qcount`` / ``kcount`` their sizes and
    ``qstart`` / ``kstart`` their first positions in ``qs`` / ``ks``; ``common`` marks the
    query groups that have keys and ``kpos`` locates each query group among the key groups.
    """

    qid: Tensor
    kid: Tensor
    qs: Tensor
    ks: Tensor
    ids: Tensor
    qcount: Tensor
    kcount: Tensor
    common: Tensor
    kpos: Tensor
    qstart: Tensor
    kstart: Tensor


def _sort_groups(graph: Graph, groups: Groups, B: int, H: int, N: int, M: int) -> _Sorted:
    """Sort the real tokens of every sequence-head by group; padding and ungrouped are dropped."""
    lengths = graph.lengths if graph.lengths is not None else torch.full((B,), min(N, M))
    qg = groups.q_groups[..., 0].expand(B, H, N).reshape(B * H, N).cpu()
    kg = groups.k_groups[..., 0].expand(B, H, M).reshape(B * H, M).cpu()
    qg = torch.where(real_tokens(lengths, B, N).repeat_interleave(H, dim=0), qg, -1)
    kg = torch.where(real_tokens(lengths, B, M).repeat_interleave(H, dim=0), kg, -1)
    span = int(max(qg.max(), kg.max())) + 2
    seq_head = torch.arange(B * H).view(-1, 1)
    # One id per (sequence-head, group); tokens in no group (or padded) are dropped.
    qid = torch.where(qg >= 0, seq_head * span + qg, -1).reshape(-1)
    kid = torch.where(kg >= 0, seq_head * span + kg, -1).reshape(-1)
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
    return _Sorted(qid, kid, qs, ks, ids, qcount, kcount, common, kpos, qstart, kstart)


def grouped_attention(
    q, k, v, graph: Graph, normalizer, alpha, max_pairs: int = 1 << 20, attend=None
) -> Tensor:
    """Queries and keys sorted by group; each group attends within itself.

    Softmax on CUDA with xformers installed (non-causal) runs every group in one
    ``memory_efficient_attention`` call over the packed groups (``attend`` overrides that
    kernel, e.g. for tests); otherwise groups of similar size are padded into batches of about
    ``max_pairs`` scores.

    Raises:
        NotImplementedError: when ``graph`` is not one slot of groups, or packed groups are
            asked for causal or entmax attention.
    """
    groups = single_groups(graph)
    if groups is None:
        raise NotImplementedError("the grouped path needs a graph of exactly one Groups slot")
    B, H, N, D = q.shape
    M, Dv = k.shape[2], v.shape[-1]
    # Group bookkeeping on the CPU; index tensors move to the data's device where used.
    srt = _sort_groups(graph, groups, B, H, N, M)
    scale = score_scale(D, normalizer, alpha)
    qflat = q.reshape(B * H * N, D)
    kflat = k.reshape(B * H * M, D)
    vflat = v.reshape(B * H * M, Dv)
    # One scratch row past the end takes the outputs of padded queries.
    out = torch.zeros(B * H * N + 1, Dv, dtype=v.dtype, device=v.device)
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
        shared = srt.ids[srt.common]
        qsel = srt.qs[torch.isin(srt.qid[srt.qs], shared)].to(v.device)
        ksel = srt.ks[torch.isin(srt.kid[srt.ks], shared)].to(v.device)
        res = attend(
            qflat[qsel] * scale,
            kflat[ksel],
            vflat[ksel],
            srt.qcount[srt.common].tolist(),
            srt.kcount[srt.kpos[srt.common]].tolist(),
            1.0,
        )
        out[qsel] = res.to(out.dtype)
    else:
        flat = (qflat, kflat, vflat)
        _padded(flat, out, srt, graph.causal, N, M, normalizer, alpha, scale, max_pairs)
    return out[:-1].view(B, H, N, Dv)


def _padded(flat, out, srt: _Sorted, causal, N, M, normalizer, alpha, scale, max_pairs) -> None:
    """Groups of similar size, padded to the largest of a chunk, attended chunk by chunk.

    ``flat`` holds the flat queries, keys and values; results go into the flat ``out`` (its
    last row takes the padded queries).
    """
    qflat, kflat, vflat = flat
    D, Dv = qflat.shape[-1], vflat.shape[-1]
    dev = out.device
    scratch = out.shape[0] - 1
    qcount, kcount, kpos = srt.qcount, srt.kcount, srt.kpos
    gi = torch.nonzero(srt.common).squeeze(-1)
    order = gi[torch.argsort(qcount[gi] * kcount[kpos[gi]], stable=True)]
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
        qi = srt.qs[(srt.qstart[ch].view(-1, 1) + ar_q).clamp(max=len(srt.qs) - 1)]  # flat ids
        ki = srt.ks[(srt.kstart[kpos[ch]].view(-1, 1) + ar_k).clamp(max=len(srt.ks) - 1)]
        # Padded query rows are computed and dropped; padded keys are masked (additive mask:
        # the fused kernel takes it as is).
        allowed = ok_k.unsqueeze(1)  # (g, 1, mk)
        if causal:
            allowed = allowed & ((ki % M).unsqueeze(1) <= (qi % N).unsqueeze(-1))
        dst = torch.where(ok_q, qi, scratch)  # padded queries write the scratch row
        qi, ki, dst, allowed = (t.to(dev) for t in (qi, ki, dst, allowed))
        bias = torch.zeros(allowed.shape, dtype=qflat.dtype, device=dev)
        bias.masked_fill_(~allowed, float("-inf"))
        g = len(chunk)
        qc = torch.index_select(qflat, 0, qi.view(-1)).view(g, mq, D)
        kc = torch.index_select(kflat, 0, ki.view(-1)).view(g, mk, D)
        vc = torch.index_select(vflat, 0, ki.view(-1)).view(g, mk, Dv)
        res = attend_batched(qc, kc, vc, bias, normalizer, alpha, scale)
        if causal:  # a query with no allowed key outputs zeros
            res = torch.where(allowed.any(-1, keepdim=True), res, 0.0)
        out.index_copy_(0, dst.view(-1), res.reshape(-1, Dv))
