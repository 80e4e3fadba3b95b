"""Score configurations that differ only in their window from one laid-out base prediction.

Most sweep grids cross a method's own parameters with the paper's window sizes: the
configurations of one fitted state that share everything but ``window`` form a *family*, and
each member's graph is the family's base graph (its prediction with no window) plus a band.
A band only adds the cells at fixed offsets ``d = j - i`` from the diagonal, so every figure of
a member follows from the base graph and, per offset, what the band adds: the gold edges it
covers, the new edges and blocks it brings, and the rows whose gold support it completes. The
base is laid out once per batch; each member costs a pass over the gold edges and over the rows
that still miss a gold key, instead of laying out and scoring a whole ``N × M`` graph.

The figures equal those of :func:`~.evaluate.evaluate_layer` on each member: counts exactly,
sums of gold probabilities to rounding, output errors to float32 rounding (the tests compare
them).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import Tensor

from sparsebench.datasets import QKData
from sparsebench.methods import Composable, Method, attention_logits

from .attention_error import relative_error
from .evaluate import gold_and_reference, layer_result, resolve_device
from .masks import block_occupancy, count_true
from .metrics import finish_metrics, gold_chunk, sparse_gold
from .row_solver import rows_error

__all__ = ["entry_width", "evaluate_family", "family_key"]

#: Never reached by a window: marks gold edges no band can cover.
_NEVER = 1 << 30


def family_key(m: Method) -> tuple | None:
    """What a member of ``m``'s window family shares with the others (``None``: no family)."""
    if not isinstance(m, Composable):
        return None
    others = tuple((p, repr(v)) for p, v in m.get_params().items() if p != "window")
    return (m.name, others)


def entry_width(d: Tensor) -> Tensor:
    """The smallest window ``w`` whose band holds offset ``d = j - i`` (see ``window_band``).

    A band of ``w`` spans ``[(-w)//2 + 1, w//2]``: offset 0 enters at 1, ``d > 0`` at ``2d``,
    ``d < 0`` at ``2|d| + 1``.
    """
    return torch.where(d > 0, 2 * d, torch.where(d == 0, 1, 1 - 2 * d))


def evaluate_family(
    members: list[Method],
    data: QKData,
    layer: int,
    *,
    batch_size: int = 16,
    block_size: int | None = None,
    gold_cache: dict | None = None,
    predict_cache: dict | None = None,
    device: str | torch.device = "cpu",
    longest: int | None = None,
) -> list[dict] | None:
    """:func:`~.evaluate.evaluate_layer` of each member of one window family, in order.

    ``members`` are fitted configurations with equal :func:`family_key`. Returns ``None`` when
    the shortcut does not apply (a batch too large for one slab, data without values, α other
    than 1.5, or a gold graph that is not one key list); the caller then scores each member
    alone.
    """
    dev = resolve_device(device)
    if data.v is None or data.alpha != 1.5:
        return None
    base_method = copy.copy(members[0])
    base_method.window = 0
    windows = [int(m.window) for m in members]
    order = data.by_length()
    pooled: list[dict[str, list[Tensor]]] = [{} for _ in members]
    errors: list[list[Tensor]] = [[] for _ in members]
    predict_s = [0.0] * len(members)
    for bi, batch in enumerate(data.batches(layer, batch_size, order=order)):
        q, k, v = batch.q.to(dev), batch.k.to(dev), batch.v.to(dev)
        key = (layer, batch_size, bi)
        gold, reference, ranked = gold_and_reference(gold_cache, key, batch, q, k, v, 1.5)
        cache = None if predict_cache is None else predict_cache.setdefault(key, {})
        for i, m in enumerate(members):  # each member's own predict time, as a sweep records it
            t0 = time.perf_counter()
            m.predict(q, k, lengths=batch.lengths, causal=data.causal, cache=cache)
            predict_s[i] += time.perf_counter() - t0
            if cache is not None:
                predict_s[i] += cache.get("reused_s", 0.0)
        base = base_method.predict(q, k, lengths=batch.lengths, causal=data.causal, cache=cache)
        sparse = sparse_gold(gold, gold)
        if len(list(base.row_chunks())) != 1 or sparse is None:
            return None
        figures = _batch_figures(
            base.materialize(), sparse, windows, q, k, v, reference, ranked, block_size
        )
        for i, (metrics, err) in enumerate(figures):
            for name, val in metrics["per_sequence"].items():
                pooled[i].setdefault(name, []).append(val)
            errors[i].append(err)
    return [
        layer_result(pooled[i], errors[i], order, data, longest, predict_s[i])
        for i in range(len(members))
    ]


def _batch_figures(base, sparse, windows, q, k, v, reference, ranked, block_size):
    """``(graph metrics, per-(sequence, head) output error)`` of each window over ``base``.

    Its length is one pass that builds the per-offset tables every window reads; splitting
    it would hand a dozen tensors between functions.
    """
    B, H, N, M = base.shape
    mask = base.parts[0].mask  # (B, H, N, M), validity applied
    L = base.lengths if base.lengths is not None else torch.full((B,), N, dtype=torch.long)
    L = L.to(mask.device)
    causal = base.causal
    gs = gold_chunk(sparse, 0, N, L, causal, block_size, (B, H, N, M))
    idx, ok, row_valid = gs["idx"], gs["ok"], gs["row_valid"]
    pos = torch.arange(N, device=mask.device)

    # Gold edges: covered by the base, else by every window from the one holding its offset.
    listed = sparse[0].index.expand(B, H, N, -1) >= 0
    hit0 = mask.gather(-1, idx) & ok
    enter = torch.where(hit0, 0, entry_width(idx - pos.view(1, 1, N, 1)))
    exact_need = torch.where(ok, enter, 0).amax(-1)  # (B, H, N): the window a row needs
    # For the output error, a listed key outside the valid pairs is never covered.
    row_need = torch.where(ok, enter, torch.where(listed, _NEVER, 0)).amax(-1)

    # Offsets any member's band reaches, and per offset the valid cells the base lacks.
    reach = [w for w in windows if w > 0]
    lo = min(((-w) // 2 + 1 for w in reach), default=1)
    hi = max((w // 2 for w in reach), default=-1)
    offsets = [d for d in range(lo, hi + 1) if not (causal and d > 0)]
    width = entry_width(torch.tensor(offsets, dtype=torch.long)).tolist()  # each offset's entry
    new_edges, new_blocks = {}, {}
    bs = block_size
    for d in offsets:
        rows = pos[max(0, -d) : N - max(0, d)]  # the query of each cell of diagonal d
        cell_ok = (rows.view(1, -1) < L.view(B, 1)) & (rows.view(1, -1) + d < L.view(B, 1))
        diag = torch.diagonal(mask, offset=d, dim1=2, dim2=3)  # (B, H, n_d)
        new_edges[d] = count_true(cell_ok.unsqueeze(1) & ~diag, lead=2)
        if bs is not None:
            nb, mb = -(-N // bs), -(-M // bs)
            flat = torch.where(cell_ok, (rows // bs) * mb + (rows + d) // bs, nb * mb)
            blocks = torch.zeros(B, nb * mb + 1, dtype=torch.bool, device=mask.device)
            new_blocks[d] = blocks.scatter_(-1, flat, True)[:, : nb * mb].view(B, 1, nb, mb)
    base_edges = count_true(mask, lead=2)
    base_blocks = block_occupancy(mask, bs) if bs is not None else None
    valid = base.num_valid()
    logits: list[Tensor] = []  # the slab's logits, computed once if some row needs them

    def slab_logits() -> Tensor:
        if not logits:
            logits.append(attention_logits(q, k))
        return logits[0]

    out = []
    for w in windows:
        band = [d for d, e in zip(offsets, width, strict=True) if e <= w]
        hit = ok & (enter <= w)
        sums = {
            "inter": count_true(hit, lead=2).double(),
            "n_gold": gs["n_gold"].double(),
            "n_pred": (base_edges + sum((new_edges[d] for d in band), 0)).double(),
            "exact_rows": ((exact_need <= w) & row_valid).sum(-1).double(),
            "mass": torch.where(hit, gs["w"], 0.0).sum((-1, -2), dtype=torch.float64),
            "mass_tot": gs["mass_tot"],
        }
        if bs is not None:
            kept = base_blocks
            for d in band:
                kept = kept | new_blocks[d]
            sums["kept_blocks"] = count_true(kept, lead=2).double()
            sums["gold_blocks"] = gs["blocks"].double()
        metrics = finish_metrics(sums, valid, L, causal, bs)
        num = torch.zeros(B * H, dtype=torch.float64, device=mask.device)
        rows = torch.nonzero((row_need > w).reshape(-1)).squeeze(-1)
        if rows.numel():
            allowed = mask.reshape(-1, M)[rows]
            if band:
                i = rows % N
                b = torch.div(rows, H * N, rounding_mode="floor")
                d = torch.tensor(band, device=mask.device)
                cols = i.unsqueeze(-1) + d
                inside = (cols >= 0) & (cols < L[b].unsqueeze(-1)) & (i < L[b]).unsqueeze(-1)
                extra = torch.zeros(len(rows), M + 1, dtype=torch.bool, device=mask.device)
                extra.scatter_(-1, torch.where(inside, cols, M), True)
                allowed |= extra[:, :M]
            rows_error(q, k, v, (0, N), rows, allowed, reference, ranked, num, slab_logits)
        out.append((metrics, relative_error(num.view(B, H), reference)))
    return out
