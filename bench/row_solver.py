"""1.5-entmax attention of selected query rows, solved as key lists.

The output error (:mod:`.attention_error`) solves only the rows whose predicted keys miss part
of their gold support. Each such row is solved from its best valid logits when those settle it,
else from its logits at its allowed keys; its output is then the listed probabilities times the
listed values, so no ``N × M`` probability matrix is formed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from sparsebench.methods import attention_logits
from sparsebench.methods.gold import entmax15_threshold, prefix_threshold

from .masks import count_true

__all__ = ["ranked_rows", "rows_error"]

#: Rows with at most this many allowed keys get their logits at those keys only; and the rows
#: so handled at a time (their gathered keys stay a few tens of MB).
_FEW, _ROWS = 96, 2048


def ranked_rows(allowed: Tensor, vals: Tensor, keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """1.5-entmax of rows ``(R, M)`` of ``allowed`` keys from their best valid logits.

    ``vals, keys`` (``(R, P)``) are the rows' :func:`~.attention_error.top_logits`. The
    allowed keys among a row's ``P`` best come out in descending order; the threshold of the
    first ``K = 32`` of them (the arithmetic of
    :func:`~sparsebench.methods.gold.entmax15_threshold`) is the row's exact one when every
    allowed key left out scores zero: either ``K`` were found and the ``K``-th scores zero, or
    fewer were found and the ``P``-th best logit, above every allowed key not seen, scores zero
    (or the row has no more valid keys).

    Returns:
        ``(probs, keys, settled)``: ``(R, K)`` probabilities of ``(R, K)`` key positions (valid
        only in settled rows) and ``(R,)`` bool, the rows settled (a row with no allowed key is
        not).
    """
    P = vals.shape[-1]
    K = min(32, P)
    hit = allowed.gather(-1, keys) & torch.isfinite(vals)
    # The first K allowed keys of each (descending) row, in order: each hit goes to the slot of
    # its rank; later hits and misses go to a spare slot K that is dropped.
    rank = hit.cumsum(-1)
    slot = torch.where(hit, rank - 1, K).clamp_(max=K)
    top = vals.new_full((len(vals), K + 1), float("-inf")).scatter_(-1, slot, vals)[:, :K]
    listed = keys.new_zeros(len(keys), K + 1).scatter_(-1, slot, keys)[:, :K]
    x = (top - top[..., :1]) / 2
    tau, support = prefix_threshold(x)
    y = torch.clamp(x - tau, min=0) ** 2
    tail = vals[..., -1:]  # the P-th best valid logit: no allowed key left out scores above it
    tail_zero = ~torch.isfinite(tail) | ((tail - top[..., :1]) / 2 <= tau)
    found_all = rank[..., -1:] < K
    settled = torch.where(found_all, tail_zero, (support < K) & (y[..., -1:] == 0))
    settled &= support > 0
    return y, listed, settled.squeeze(-1)


def rows_error(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    span: tuple[int, int],
    rows: Tensor,
    rows_allowed: Tensor,
    reference: Tensor,
    ranked,
    num: Tensor,
    logits: Callable[[], Tensor] | None = None,
) -> None:
    """Add ``‖attn_Ĝ − attn_G‖²`` of some rows of a slab to ``num`` (``(B·H,)``, float64).

    ``rows`` index the flattened ``(B, H, e - s)`` rows of the slab ``span = (s, e)`` and
    ``rows_allowed`` (``(R, M)`` bool) are their allowed keys. Each row is solved as a key list:
    from its ranked logits (:func:`ranked_rows`) where they settle it, else from its logits at
    its allowed keys (rows with few) or its full logits row (:func:`entmax15_threshold`); its
    output is the listed probabilities times the listed values. ``logits`` (optional) returns
    the slab's ``(B, H, c, M)`` logits when the caller keeps them. α = 1.5.
    """
    s, e = span
    c = e - s
    B, H, _, D = q.shape
    M, Dv = k.shape[2], v.shape[-1]
    values = v.reshape(B * H * M, Dv)
    bh = torch.div(rows, c, rounding_mode="floor")
    P = ranked[0].shape[-1]
    y, key, settled = ranked_rows(
        rows_allowed,
        ranked[0][:, :, s:e].reshape(-1, P)[rows],
        ranked[1][:, :, s:e].reshape(-1, P)[rows],
    )
    out = torch.zeros(len(rows), Dv, dtype=v.dtype, device=v.device)
    done = torch.nonzero(settled).squeeze(-1)
    out[done] = _listed_output(y[done], key[done], bh[done], values, M)
    n_allowed = count_true(rows_allowed, lead=1)
    unsettled = ~settled & (n_allowed > 0)
    few = torch.nonzero(unsettled & (n_allowed <= _FEW)).squeeze(-1)
    rest = torch.nonzero(unsettled & (n_allowed > _FEW)).squeeze(-1)
    for at in few.split(_ROWS) if few.numel() else ():  # logits at allowed keys only
        keys = rows_allowed[at].to(torch.uint8).topk(int(n_allowed[at].max()), dim=-1)
        qr = q[:, :, s:e].reshape(-1, D)[rows[at]] * D**-0.5
        kr = k.reshape(B * H, M, -1)[bh[at].unsqueeze(-1), keys.indices]
        z = torch.einsum("rd,rwd->rw", qr, kr).masked_fill_(keys.values == 0, float("-inf"))
        for part in entmax15_threshold(z, 32, from_logits=True, list_support=True):
            sub = at if part.rows is None else at[part.rows]
            listed = keys.indices if part.rows is None else keys.indices[part.rows]
            key_at = listed.gather(-1, part.index)
            out[sub] = _listed_output(part.probs, key_at, bh[sub], values, M)
    if rest.numel():
        z = attention_logits(q[:, :, s:e], k) if logits is None else logits()
        z = z.reshape(-1, M)[rows[rest]]
        z.masked_fill_(~rows_allowed[rest], float("-inf"))
        for part in entmax15_threshold(z, 32, from_logits=True, list_support=True):
            at = rest if part.rows is None else rest[part.rows]
            out[at] = _listed_output(part.probs, part.index, bh[at], values, M)
    ref = reference[:, :, s:e].reshape(-1, Dv)[rows]
    num.index_add_(0, bh, ((out - ref).double() ** 2).sum(-1))


def _listed_output(probs: Tensor, keys: Tensor, bh: Tensor, values: Tensor, M: int) -> Tensor:
    """``Σ_j probs[r, j] · v[bh[r], keys[r, j]]`` per row ``r``: ``(R, Dv)``.

    One sparse (CSR) product over the listed entries with a non-zero probability.
    """
    nonzero = probs != 0
    crow = torch.zeros(len(probs) + 1, dtype=torch.long, device=probs.device)
    torch.cumsum(nonzero.sum(-1), 0, out=crow[1:])
    cols = (keys + bh.unsqueeze(-1) * M)[nonzero]
    with warnings.catch_warnings():  # torch calls its CSR support beta
        warnings.simplefilter("ignore", UserWarning)
        mat = torch.sparse_csr_tensor(crow, cols, probs[nonzero], (len(probs), values.shape[0]))
        return mat @ values
