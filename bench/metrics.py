"""Graph metrics as the Sparsefinder paper computes them, and the attention output error.

Every figure is computed per sequence and head, then averaged over the sequences (a macro
average: each sequence counts once), then over the heads; averaging over layers is left to the
caller (:func:`average_layers`). Only valid pairs count: queries and keys below the sequence's
length and, for causal attention, keys at or before the query.

* ``recall`` = |Ĝ ∩ G| / |G|
* ``sparsity`` = 1 − |Ĝ| / |valid pairs|  (``gold_sparsity``: the same for G)
* ``exact`` = share of valid queries whose gold keys are all predicted
* ``precision`` = |Ĝ ∩ G| / |Ĝ| (sequences with an empty Ĝ are left out of its average)
* ``mass_recall`` = share of the gold α-entmax probability that falls on predicted edges
* ``block_sparsity`` = 1 − kept blocks / valid blocks at a kernel block size, where a block is
  kept if any predicted edge lies in it (``gold_block_sparsity``: the same for G)

Sequences of length 0 have no valid pairs and are left out of every average. The attention
``output_error`` lives in :mod:`.attention_error` and is re-exported here. Graphs on a GPU are
scored there; the per-sequence figures come back on the CPU.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from sparsebench.methods import Graph, RowIndex, as_lengths, real_tokens

from .attention_error import output_error
from .masks import block_occupancy, count_true

__all__ = [
    "METRICS",
    "Metric",
    "average_layers",
    "finish_metrics",
    "gold_chunk",
    "graph_metrics",
    "macro_average",
    "sparse_gold",
    "output_error",
]


@dataclass(frozen=True)
class Metric:
    """A reported figure: its record field, ranking direction, table header and cell format.

    ``per_layer`` marks the per-layer fields of sweep records, which the report averages.
    """

    name: str
    higher_is_better: bool
    header: str
    description: str
    fmt: str = "{:.3f}"
    per_layer: bool = False

    @property
    def arrow(self) -> str:
        """``↑`` when higher is better, else ``↓``."""
        return "↑" if self.higher_is_better else "↓"


#: Every reported figure by name; the per-layer record fields first, in the order the report
#: writes them (block sparsity at the sweep's kernel block size).
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("recall", True, "Recall", "share of gold edges predicted", per_layer=True),
        Metric("sparsity", True, "Sparsity", "share of valid pairs not predicted", per_layer=True),
        Metric(
            "exact", True, "Exact", "share of queries with every gold key predicted", per_layer=True
        ),
        Metric(
            "precision", True, "Precision", "share of predicted edges that are gold", per_layer=True
        ),
        Metric(
            "mass_recall", True, "Mass recall", "share of gold attention mass kept", per_layer=True
        ),
        Metric(
            "gold_sparsity", True, "Gold sparsity", "sparsity of the gold graph", per_layer=True
        ),
        Metric(
            "block_sparsity", True, "Block sparsity", "share of blocks left empty", per_layer=True
        ),
        Metric(
            "gold_block_sparsity",
            True,
            "Gold block sparsity",
            "block sparsity of the gold graph",
            per_layer=True,
        ),
        Metric("fit_s", False, "Fit s", "seconds to fit one layer", "{:.2f}", per_layer=True),
        Metric(
            "predict_s", False, "Predict s", "seconds to predict one layer's graphs", per_layer=True
        ),
        Metric(
            "output_error", False, "Output error", "relative error of attention over the prediction"
        ),
        Metric(
            "auc", True, "AUC", "area under the step curve of a method's recall-sparsity frontier"
        ),
        Metric(
            "accuracy", True, "Accuracy", "task accuracy with the prediction as attention", "{:.4f}"
        ),
        Metric(
            "delta_accuracy", True, "Δ accuracy", "task accuracy minus full α-entmax's", "{:+.4f}"
        ),
        Metric("x_best_dense", False, "× best dense", "end-to-end time over the best dense kernel"),
        Metric("peak_mb", False, "Peak MB", "extra peak memory in MB", "{:.0f}"),
    )
}


def _resolve(pred: Graph, gold: Graph, lengths, causal) -> tuple[Tensor | None, bool]:
    for name, g in (("pred", pred), ("gold", gold)):
        if not isinstance(g, Graph):
            raise ValueError(f"{name} must be a sparsebench Graph, got {type(g).__name__}")
    if pred.shape != gold.shape:
        raise ValueError(f"pred has shape {pred.shape} but gold has shape {gold.shape}")
    if lengths is None:
        lengths = gold.lengths if gold.lengths is not None else pred.lengths
    else:
        lengths = as_lengths(lengths, pred.shape[0])
    return lengths, bool(causal or gold.causal or pred.causal)


def _weights_slab(probs: Tensor | Graph, s: int, e: int, shape) -> Tensor:
    if isinstance(probs, Tensor):
        return probs[:, :, s:e].to(torch.float64)
    parts = [p for p in probs.find(RowIndex) if p.weights is not None]
    if not parts:
        raise ValueError(
            "probs is a Graph without weights; build it with gold_graph(..., with_probs=True)"
        )
    return sum(p.slab_weights(s, e, shape).to(torch.float64) for p in parts)


def macro_average(per_bh: Tensor) -> tuple[float, list[float]]:
    """The paper's average of per-(sequence, head) figures ``(B, H)``.

    Returns:
        The mean over sequences (ignoring NaN), then over heads; and the per-head means.
    """
    per_head = torch.nanmean(per_bh, dim=0)
    return float(torch.nanmean(per_head)), [float(x) for x in per_head]


def graph_metrics(
    pred: Graph,
    gold: Graph,
    *,
    lengths: Tensor | None = None,
    causal: bool = False,
    probs: Tensor | Graph | None = None,
    block_size: int | None = None,
) -> dict:
    """Recall, sparsity, exact, precision (and mass recall, block sparsity) of ``pred``.

    One function because every figure is accumulated in the same pass over row chunks, so the
    ``N × M`` graphs are never materialised whole.

    Args:
        pred: predicted graph ``(B, H, N, M)``.
        gold: gold graph of the same shape.
        lengths: ``(B,)`` valid lengths; defaults to the graphs' own.
        causal: count only keys at or before the query (also on if either graph is causal).
        probs: gold α-entmax probabilities, dense ``(B, H, N, M)`` or a graph with weights
            (``gold_graph(..., with_probs=True)``); enables ``mass_recall``.
        block_size: kernel block size (e.g. 64 or 128); enables ``block_sparsity``.

    Returns:
        ``{metric: value}`` averaged as the paper does, plus ``per_head`` (``{metric: [H]}``)
        and ``per_sequence`` (``{metric: (B, H) tensor}``).
    """
    lengths, causal = _resolve(pred, gold, lengths, causal)
    if block_size is not None and (
        isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1
    ):
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if isinstance(probs, Tensor):
        if probs.is_complex() or not probs.is_floating_point():
            raise ValueError(f"probs must be a floating-point tensor, got {probs.dtype}")
        if tuple(probs.shape) != pred.shape:
            raise ValueError(f"probs has shape {tuple(probs.shape)}, the graphs {pred.shape}")
    elif probs is not None and not isinstance(probs, Graph):
        raise ValueError(f"probs must be a tensor or a Graph, got {type(probs).__name__}")
    B, H, N, M = pred.shape
    pred = pred.with_validity(lengths=lengths, causal=causal)
    gold = gold.with_validity(lengths=lengths, causal=causal)
    dev = gold.device if _holds_tensors(gold) else pred.device  # where gold's key lists are
    L = lengths if lengths is not None else torch.full((B,), N, dtype=torch.long)
    L = L.to(dev)

    z = lambda: torch.zeros(B, H, dtype=torch.float64, device=dev)  # noqa: E731
    inter, n_gold, n_pred, exact_rows, mass, mass_tot = z(), z(), z(), z(), z(), z()
    kept_blocks, gold_blocks = z(), z()
    bs = block_size or 1
    sparse = sparse_gold(gold, probs)
    for s, e in pred.row_chunks(multiple=bs):
        p = pred.slab(s, e).to(dev)  # (B, H, c, M), validity applied
        if sparse is not None:
            # Gold as key lists: look the predicted mask up at the gold keys only. The gold side
            # of each chunk is computed once per gold graph and reused across predictions.
            gs = gold_chunk(sparse, s, e, L, causal, block_size, (B, H, N, M))
            hit = torch.gather(p, -1, gs["idx"]) & gs["ok"]
            inter += _count(hit)
            n_gold += gs["n_gold"]
            n_pred += _count(p)
            exact_rows += (~(gs["ok"] & ~hit).any(-1) & gs["row_valid"]).sum(-1)
            if "w" in gs:
                mass += torch.where(hit, gs["w"], 0.0).sum((-1, -2), dtype=torch.float64)
                mass_tot += gs["mass_tot"]
            if block_size is not None:
                kept_blocks += block_occupancy(p, bs).sum((-1, -2))
                gold_blocks += gs["blocks"]
            continue
        g = gold.slab(s, e).to(dev)
        both = p & g
        inter += both.sum((-1, -2))
        n_gold += g.sum((-1, -2))
        n_pred += p.sum((-1, -2))
        row_valid = real_tokens(L, B, e, device=dev)[:, None, s:]  # (B, 1, c)
        missing = (g & ~p).any(-1)  # (B, H, c)
        exact_rows += (~missing & row_valid).sum(-1)
        if probs is not None:
            w = _weights_slab(probs, s, e, pred.shape).to(dev)
            w = torch.where(g, w, 0.0)
            mass += torch.where(p, w, 0.0).sum((-1, -2))
            mass_tot += w.sum((-1, -2))
        if block_size is not None:
            kept_blocks += block_occupancy(p, bs).sum((-1, -2))
            gold_blocks += block_occupancy(g, bs).sum((-1, -2))

    sums = {"inter": inter, "n_gold": n_gold, "n_pred": n_pred, "exact_rows": exact_rows}
    if probs is not None:
        sums.update(mass=mass, mass_tot=mass_tot)
    if block_size is not None:
        sums.update(kept_blocks=kept_blocks, gold_blocks=gold_blocks)
    return finish_metrics(sums, pred.num_valid().to(dev), L, causal, block_size)


def finish_metrics(
    sums: dict[str, Tensor], valid: Tensor, L: Tensor, causal: bool, block_size: int | None
) -> dict:
    """The figures of :func:`graph_metrics` from its per-(sequence, head) counts.

    ``sums`` holds ``(B, H)`` tensors: ``inter``, ``n_gold``, ``n_pred``, ``exact_rows``, and
    optionally ``mass`` with ``mass_tot`` (mass recall) and ``kept_blocks`` with
    ``gold_blocks`` (block sparsity, with ``block_size``). ``valid`` is each sequence's count of
    valid pairs and ``L`` its length.
    """
    inter, n_gold, n_pred = sums["inter"], sums["n_gold"], sums["n_pred"]
    B = len(L)
    dev = inter.device
    valid = valid.to(dev, torch.float64).view(B, 1)
    seq_ok = valid > 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=dev)
    per_seq: dict[str, Tensor] = {
        "recall": torch.where(n_gold > 0, inter / n_gold.clamp(min=1), nan),
        "sparsity": torch.where(seq_ok, 1 - n_pred / valid.clamp(min=1), nan),
        "exact": torch.where(L.view(B, 1) > 0, sums["exact_rows"] / L.view(B, 1).clamp(min=1), nan),
        "precision": torch.where(n_pred > 0, inter / n_pred.clamp(min=1), nan),
        "gold_sparsity": torch.where(seq_ok, 1 - n_gold / valid.clamp(min=1), nan),
    }
    if "mass" in sums:
        mass, mass_tot = sums["mass"], sums["mass_tot"]
        per_seq["mass_recall"] = torch.where(mass_tot > 0, mass / mass_tot.clamp(min=1e-300), nan)
    if "kept_blocks" in sums:
        bs = block_size or 1
        nb = (L + bs - 1) // bs
        vb = (nb * (nb + 1) // 2 if causal else nb * nb).to(torch.float64).view(B, 1)
        kept, gold_blocks = sums["kept_blocks"], sums["gold_blocks"]
        per_seq["block_sparsity"] = torch.where(vb > 0, 1 - kept / vb.clamp(min=1), nan)
        per_seq["gold_block_sparsity"] = torch.where(vb > 0, 1 - gold_blocks / vb.clamp(min=1), nan)

    per_seq = {name: v.cpu() for name, v in per_seq.items()}
    out: dict = {}
    per_head: dict[str, list[float]] = {}
    for name, v in per_seq.items():
        out[name], per_head[name] = macro_average(v)
    out["per_head"] = per_head
    out["per_sequence"] = per_seq
    return out


def _holds_tensors(graph: Graph) -> bool:
    """Whether any part of ``graph`` stores tensors (structure-only parts such as bands do not)."""
    return any(isinstance(x, Tensor) for p in graph.parts for x in vars(p).values())


def sparse_gold(gold: Graph, probs) -> tuple[RowIndex, bool] | None:
    """The gold key-list part, and whether to use its weights, when the fast path applies.

    It applies when gold is one RowIndex part and ``probs`` is absent or the gold graph itself.
    """
    if len(gold.parts) != 1 or not isinstance(gold.parts[0], RowIndex):
        return None
    part = gold.parts[0]
    if probs is None:
        return part, False
    if isinstance(probs, Graph) and len(probs.parts) == 1 and probs.parts[0] is part:
        return (part, True) if part.weights is not None else None
    return None


# Gold-side figures per chunk, per gold part (keyed by its id, dropped when it is collected).
_GOLD_MEMO: dict[int, dict] = {}


def gold_chunk(
    sparse: tuple[RowIndex, bool], s: int, e: int, L: Tensor, causal: bool, block_size, shape
) -> dict[str, Tensor]:
    """What the metrics need from gold rows ``[s, e)``: clamped keys, validity, counts, weights."""
    part, use_w = sparse
    if id(part) not in _GOLD_MEMO:
        _GOLD_MEMO[id(part)] = {}
        weakref.finalize(part, _GOLD_MEMO.pop, id(part), None)
    memo = _GOLD_MEMO[id(part)]
    key = (s, e, tuple(L.tolist()), causal, block_size, use_w, shape)
    if key in memo:
        return memo[key]
    B, H, _, M = shape
    idx = part.index[:, :, s:e]
    idx = idx.expand(B, H, *idx.shape[2:])
    row_valid = real_tokens(L, B, e, device=idx.device)[:, None, s:]  # (B, 1, c)
    ok = (idx >= 0) & (idx < L.view(B, 1, 1, 1)) & row_valid.unsqueeze(-1)
    if causal:
        ok &= idx <= torch.arange(s, e, device=idx.device).view(1, 1, -1, 1)
    out = {
        "idx": idx.clamp(min=0),
        "ok": ok,
        "n_gold": _count(ok),
        "row_valid": row_valid,
    }
    if use_w:
        w = part.weights[:, :, s:e].expand(B, H, *idx.shape[2:])
        out["w"] = torch.where(ok, w, 0.0)
        out["mass_tot"] = out["w"].sum((-1, -2), dtype=torch.float64)
    if block_size is not None:
        out["blocks"] = _row_blocks(idx, ok, s, e, block_size, M).sum((-1, -2))
    memo[key] = out
    return out


def _row_blocks(idx: Tensor, ok: Tensor, s: int, e: int, bs: int, M: int) -> Tensor:
    """Blocks holding a listed edge, from key lists of rows ``[s, e)``: (B, H, c/bs, Mb)."""
    B, H, c, K = idx.shape
    cb, Mb = -(-c // bs), -(-M // bs)
    row_block = (torch.arange(c, device=idx.device) // bs).view(1, 1, c, 1)
    flat = torch.where(ok, row_block * Mb + idx.clamp(min=0) // bs, cb * Mb)
    out = torch.zeros(B, H, cb * Mb + 1, dtype=torch.bool, device=idx.device)
    out.scatter_(-1, flat.reshape(B, H, c * K), True)
    return out[..., : cb * Mb].view(B, H, cb, Mb)


def _count(mask: Tensor) -> Tensor:
    """Edges per (B, H) of a bool slab (:func:`count_true` over its last two dims)."""
    return count_true(mask, lead=2)


def average_layers(per_layer: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each scalar metric over layers (the paper's last averaging step)."""
    rows = list(per_layer)
    keys = [k for k in rows[0] if isinstance(rows[0][k], int | float)] if rows else []
    out = {}
    for key in keys:
        vals = [float(r[key]) for r in rows if not math.isnan(float(r[key]))]
        out[key] = sum(vals) / len(vals) if vals else float("nan")
    return out
