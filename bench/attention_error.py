"""The attention output error: α-entmax restricted to a predicted graph against full α-entmax.

``‖attn_Ĝ − attn_G‖ / ‖attn_G‖`` per sequence and head, where ``attn_G`` is full α-entmax
attention (its support is the gold graph G) and ``attn_Ĝ`` is α-entmax over the predicted
valid keys only. The reference output depends only on the layer's queries, keys and values,
so a sweep computes it once per batch (:func:`reference_output`) and passes it to
:func:`output_error` for every configuration.

For α = 1.5 the probabilities come from the threshold of the top entries of each row
(:func:`sparsebench.methods.gold.entmax15_threshold`, widened until the support fits), the
arithmetic of the exact sort-based algorithm, so they equal ``entmax15`` over the whole row
without sorting it; a row with no allowed key (a padded query) is settled at once and outputs
zero. Other α use bisection over the whole row.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparsebench.methods import (
    Band,
    Graph,
    RowIndex,
    attention_logits,
    attention_probs,
    check_alpha,
    check_qk,
    to_scoring,
)
from sparsebench.methods.gold import entmax15_probs

from .row_solver import ranked_rows, rows_error

__all__ = [
    "entmax_output",
    "missing_rows_error",
    "output_error",
    "reference_output",
    "relative_error",
    "top_logits",
]


def entmax_output(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    alpha: float,
    *,
    gold: Graph | None = None,
    reference: Tensor | None = None,
    ranked: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """α-entmax attention restricted to ``graph``, a slab of query rows at a time (unchecked).

    Inputs are in the scoring dtype and already checked; ``graph`` carries the lengths and
    causality. Returns ``(B, H, N, Dv)``; rows with no allowed key are zero. With ``gold`` (the
    support of full α-entmax) and ``reference`` (full α-entmax's output), a row whose allowed
    keys include its whole gold support takes the reference row: restricting α-entmax to a
    superset of its support leaves the distribution unchanged, so only the other rows are solved.
    With ``ranked`` (:func:`top_logits` of the same inputs; α = 1.5), a row is first solved from
    its best valid keys (:func:`_entmax15_ranked`); the logits of a slab are computed only for
    the rows that this does not settle.
    """
    B, H, N, _ = q.shape
    out = torch.zeros(B, H, N, v.shape[-1], dtype=v.dtype, device=v.device)
    for s, e in graph.row_chunks():
        allowed = graph.slab(s, e).to(q.device)
        todo = None  # rows to solve: all, or those that miss a gold key
        if gold is not None and reference is not None:
            todo = _missing_gold(allowed, gold, s, e)
        if alpha != 1.5:
            z = attention_logits(q[:, :, s:e], k).masked_fill_(~allowed, float("-inf"))
            probs = attention_probs(z, "entmax", alpha)
        elif ranked is None:
            z = attention_logits(q[:, :, s:e], k).masked_fill_(~allowed, float("-inf"))
            probs = _entmax15_rows(z, allowed, todo)
        else:
            vals, idx = ranked[0][:, :, s:e], ranked[1][:, :, s:e]
            probs, settled = _entmax15_ranked(allowed, vals, idx)
            rest = ~settled if todo is None else todo & ~settled
            if rest.any():
                z = attention_logits(q[:, :, s:e], k).masked_fill_(~allowed, float("-inf"))
                probs = torch.where(rest, _entmax15_rows(z, allowed, rest), probs)
        new = probs @ v
        out[:, :, s:e] = new if todo is None else torch.where(todo, new, reference[:, :, s:e])
    return out


def top_logits(
    q: Tensor, k: Tensor, *, lengths: Tensor | None, causal: bool, width: int = 128
) -> tuple[Tensor, Tensor]:
    """Each query row's ``width`` largest valid logits, in descending order, and their keys.

    ``(values, keys)``, both ``(B, H, N, width)``; a row with fewer valid keys is padded with
    ``-inf``. Inputs are in the scoring dtype and already checked. Computed once per batch, it
    lets :func:`output_error` settle most rows of every prediction without their logits.
    """
    B, H, N, _ = q.shape
    M = k.shape[2]
    width = min(width, M)
    graph = Graph((B, H, N, M), [Band(-N, M)], lengths=lengths, causal=causal)
    vals = torch.empty(B, H, N, width, dtype=q.dtype, device=q.device)
    keys = torch.empty(B, H, N, width, dtype=torch.long, device=q.device)
    for s, e in graph.row_chunks():
        z = attention_logits(q[:, :, s:e], k).masked_fill_(~graph.slab(s, e), float("-inf"))
        vals[:, :, s:e], keys[:, :, s:e] = z.topk(width, dim=-1)
    return vals, keys


def _entmax15_ranked(allowed: Tensor, vals: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """1.5-entmax over ``allowed`` keys from each row's best valid logits (:func:`top_logits`).

    Dense form of :func:`_ranked_rows`: ``(probs, settled)``, the probabilities ``(B, H, c, M)``
    of the settled rows (zero elsewhere) and ``(B, H, c, 1)`` bool, the settled rows. Rows with
    no allowed key are settled with zeros.
    """
    M = allowed.shape[-1]
    lead = allowed.shape[:-1]
    y, key, settled = ranked_rows(
        allowed.reshape(-1, M), vals.reshape(-1, vals.shape[-1]), keys.reshape(-1, keys.shape[-1])
    )
    y = torch.where(settled.unsqueeze(-1), y, 0.0)
    # Unused slots list key 0 with probability 0: adding keeps a listed key 0 intact.
    probs = torch.zeros(len(y), M, dtype=vals.dtype, device=vals.device).scatter_add_(-1, key, y)
    empty = ~allowed.any(-1, keepdim=True)
    return probs.view(*lead, M), settled.view(*lead, 1) | empty


def missing_rows_error(
    q: Tensor, k: Tensor, v: Tensor, graph: Graph, gold: Graph, reference: Tensor, ranked
) -> Tensor:
    """``‖attn_Ĝ − attn_G‖²`` per ``(B, H)`` (float64), from the rows that miss a gold key.

    A row whose allowed keys include its gold support has the reference output, so only the
    other rows are solved (:func:`rows_error`). Inputs as in :func:`entmax_output`, α = 1.5.
    """
    B, H, N, _ = q.shape
    num = torch.zeros(B * H, dtype=torch.float64, device=q.device)
    for s, e in graph.row_chunks():
        allowed = graph.slab(s, e).to(q.device)
        rows = torch.nonzero(_missing_gold(allowed, gold, s, e).reshape(-1)).squeeze(-1)
        if rows.numel():
            rows_allowed = allowed.reshape(-1, allowed.shape[-1])[rows]
            rows_error(q, k, v, (s, e), rows, rows_allowed, reference, ranked, num)
    return num.view(B, H)


def relative_error(num: Tensor, reference: Tensor) -> Tensor:
    """``sqrt(num / ‖attn_G‖²)`` per ``(B, H)`` on the CPU; NaN where the reference is zero."""
    den = (reference.double() ** 2).sum((-1, -2))
    return torch.where(den > 0, (num / den.clamp(min=1e-300)).sqrt(), float("nan")).cpu()


def _missing_gold(allowed: Tensor, gold: Graph, s: int, e: int) -> Tensor:
    """``(B, H, c, 1)``: rows ``[s, e)`` whose ``allowed`` keys miss a key of ``gold``."""
    if len(gold.parts) == 1 and isinstance(gold.parts[0], RowIndex):
        idx = gold.parts[0].index[:, :, s:e].to(allowed.device)  # -1 pads a row's list
        idx = idx.expand(*allowed.shape[:3], idx.shape[-1])
        hit = allowed.gather(-1, idx.clamp(min=0)) | (idx < 0)
        return ~hit.all(-1, keepdim=True)
    return (gold.slab(s, e).to(allowed.device) & ~allowed).any(-1, keepdim=True)


def _entmax15_rows(z: Tensor, allowed: Tensor, todo: Tensor | None) -> Tensor:
    """1.5-entmax probabilities of logits ``z`` (``-inf`` outside ``allowed``), of ``todo`` rows.

    Rows outside ``todo`` (``(B, H, c, 1)`` bool, or ``None`` for all) and rows with no allowed
    key get zeros.
    """
    empty = ~allowed.any(-1, keepdim=True)
    z[..., :1].masked_fill_(empty, 0.0)  # one finite entry: settled in the first round
    rows = None
    if todo is not None and todo.float().mean() < 0.5:  # else solving all rows is cheaper
        rows = torch.nonzero(todo.reshape(-1)).squeeze(-1)
    return entmax15_probs(z, rows, k=32).masked_fill_(empty, 0.0)


def _checked(q, k, v, alpha, lengths, causal):
    alpha = check_alpha(alpha)
    lengths = check_qk(q, k, v=v, lengths=lengths, causal=causal)
    return to_scoring(q), to_scoring(k), to_scoring(v), alpha, lengths


def _full(q: Tensor, k: Tensor, lengths, causal: bool) -> Graph:
    B, H, N, _ = q.shape
    return Graph((B, H, N, k.shape[2]), [Band(-N, k.shape[2])], lengths=lengths, causal=causal)


def reference_output(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: float = 1.5,
    *,
    lengths: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    """Full α-entmax attention ``(B, H, N, Dv)`` (in the scoring dtype): ``attn_G``.

    Pass it to :func:`output_error` as ``reference`` to score many predictions of one batch.

    Raises:
        ValueError: for invalid tensors or an α that is not finite and > 1.
    """
    q, k, v, alpha, lengths = _checked(q, k, v, alpha, lengths, causal)
    with torch.no_grad():
        return entmax_output(q, k, v, _full(q, k, lengths, causal), alpha)


def output_error(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pred: Graph,
    alpha: float = 1.5,
    *,
    lengths: Tensor | None = None,
    causal: bool = False,
    reference: Tensor | None = None,
    gold: Graph | None = None,
    ranked: tuple[Tensor, Tensor] | None = None,
) -> dict:
    """Relative error of α-entmax attention restricted to ``pred`` against full α-entmax.

    Its length is argument checking and the per-batch loop that reuses the cached reference; both
    read the same validated state.

    ``‖attn_Ĝ − attn_G‖ / ‖attn_G‖`` per sequence and head (Frobenius norm over its valid
    query rows), averaged like :func:`~sparsebench.bench.metrics.graph_metrics`. ``attn_Ĝ`` is
    α-entmax over the predicted valid keys only; a query with no predicted key outputs zero.
    Float16 and bfloat16 inputs are computed in float32 (their scores overflow in half
    precision).

    Args:
        q: ``(B, H, N, D)`` queries of one layer, unscaled.
        k: ``(B, H, M, D)`` keys.
        v: ``(B, H, M, Dv)`` values.
        pred: the predicted graph ``(B, H, N, M)``.
        alpha: entmax α.
        lengths: ``(B,)`` valid lengths (default: the graph's).
        causal: keys after the query are excluded (also on if ``pred`` is causal).
        reference: :func:`reference_output` of the same inputs, lengths and causality, to
            reuse it across predictions; computed here when absent.
        gold: the gold graph of the same inputs (:func:`~sparsebench.methods.gold_graph`),
            with ``reference``: rows whose prediction covers their gold support take the
            reference row instead of being solved again (the same values, less work).
        ranked: :func:`top_logits` of the same inputs, lengths and causality: rows are solved
            from them where they suffice (the same values, less work).

    Returns:
        ``{"output_error": value, "per_head": {"output_error": [H]}, "per_sequence":
        {"output_error": (B, H) tensor}}``.

    Raises:
        ValueError: for invalid tensors, a graph or reference of another shape, or an α that
            is not finite and > 1.
    """
    from .metrics import macro_average

    q, k, v, alpha, lengths = _checked(q, k, v, alpha, lengths, causal)
    if not isinstance(pred, Graph):
        raise ValueError(f"pred must be a sparsebench Graph, got {type(pred).__name__}")
    if pred.shape != (*q.shape[:3], k.shape[2]):
        raise ValueError(f"pred has shape {pred.shape}, q/k give {(*q.shape[:3], k.shape[2])}")
    if lengths is None:
        lengths = pred.lengths
    causal = causal or pred.causal
    expected = (*q.shape[:3], v.shape[-1])
    if reference is not None and tuple(reference.shape) != expected:
        raise ValueError(f"reference has shape {tuple(reference.shape)}, expected {expected}")
    if gold is not None and (not isinstance(gold, Graph) or gold.shape != pred.shape):
        raise ValueError(f"gold must be the gold Graph of shape {pred.shape}")
    pred = pred.with_validity(lengths=lengths, causal=causal)
    with torch.no_grad():
        if reference is None:
            reference = entmax_output(q, k, v, _full(q, k, lengths, causal), alpha)
        if gold is not None and ranked is not None and alpha == 1.5:
            num = missing_rows_error(q, k, v, pred, gold, reference, ranked)
        else:
            approx = entmax_output(
                q, k, v, pred, alpha, gold=gold, reference=reference, ranked=ranked
            )
            num = ((approx - reference).double() ** 2).sum((-1, -2))
    per = relative_error(num, reference)
    value, per_head = macro_average(per)
    return {
        "output_error": value,
        "per_head": {"output_error": per_head},
        "per_sequence": {"output_error": per},
    }
