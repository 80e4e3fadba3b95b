"""Where a dataset's gold edges are: statistics of the gold α-entmax graph per layer and head.

A benchmark's verdicts transfer to real models only when its gold graphs look like theirs.
:func:`gold_statistics` measures, on one split, per layer and head:

* ``sparsity``: the share of valid (query, key) pairs outside the gold graph, per sequence, then
  averaged over sequences (as the card's ``gold_sparsity_per_layer``);
* ``support_mean`` / ``support_max``: keys in a query's support (mean over real queries, max);
* ``near_1``, ``near_3``, ``near_11``: the share of gold edges with ``|i − j| ≤ 1, 3, 11`` (the
  diagonal and its neighbours; a window method's best case);
* ``first_token``: the share of gold edges on key 0 (an "attention sink");
* ``entropy``: the mean entropy (nats) of the α-entmax rows;

and per layer the count of gold edges by distance ``|i − j|`` (``by_distance``), from which the
plot of :mod:`sparsebench.bench.report.realism_plot` draws the cumulative share. Shares of edges
pool every sequence of the split (micro averages); sparsity is per sequence first (macro).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .qkdata import QKData

__all__ = ["NEAR", "STAT_NAMES", "gold_statistics"]

#: Distances of the near-diagonal shares.
NEAR = (1, 3, 11)
#: The per-head statistics, in the order tables show them.
STAT_NAMES = (
    "sparsity",
    "support_mean",
    "support_max",
    *(f"near_{d}" for d in NEAR),
    "first_token",
    "entropy",
)


def _entmax_rows(scores: Tensor, alpha: float) -> Tensor:
    """α-entmax over the last dimension, exact at α = 1.5 (bisection otherwise)."""
    from entmax import entmax15, entmax_bisect

    if alpha == 1.5:
        return entmax15(scores, dim=-1)
    return entmax_bisect(scores, alpha=alpha, dim=-1, n_iter=60)


class _Totals:
    """Running sums of one layer's statistics, per head."""

    def __init__(self, heads: int, n: int) -> None:
        z = lambda: torch.zeros(heads, dtype=torch.float64)  # noqa: E731
        self.sparsity_sum, self.seqs = z(), 0
        self.edges, self.queries, self.entropy = z(), z(), z()
        self.support_max = torch.zeros(heads, dtype=torch.long)
        self.near = {d: z() for d in NEAR}
        self.first = z()
        self.by_distance = torch.zeros(n, dtype=torch.float64)

    def add(self, gold: Tensor, probs: Tensor, valid: Tensor, real_q: Tensor) -> None:
        """Add a batch of sequences (all tensors of one layer, bool unless said).

        ``gold`` and ``valid`` are ``(S, H, n, n)``, ``probs`` the entmax rows (float), ``real_q``
        ``(S, 1, n)``: the queries inside their sequence.
        """
        n = gold.shape[-1]
        pos = torch.arange(n)
        dist = (pos.view(n, 1) - pos.view(1, n)).abs()
        per_seq = gold.sum((-1, -2)).double() / valid.sum((-1, -2)).double().clamp(min=1)
        self.sparsity_sum += (1 - per_seq).sum(0)
        self.seqs += gold.shape[0]
        support = gold.sum(-1)  # (S, H, n)
        self.edges += support.sum((0, 2)).double()
        self.queries += real_q.expand_as(support).sum((0, 2)).double()
        self.support_max = torch.maximum(self.support_max, support.amax((0, 2)))
        for d in NEAR:
            self.near[d] += (gold & (dist <= d)).sum((0, 2, 3)).double()
        self.first += gold[..., 0].sum((0, 2)).double()
        logp = torch.where(probs > 0, probs.clamp(min=1e-30).log(), 0.0)
        row_entropy = -(probs * logp).sum(-1).double()  # (S, H, n)
        self.entropy += torch.where(real_q, row_entropy, 0.0).sum((0, 2))
        self.by_distance[:n] += torch.bincount(dist.expand_as(gold)[gold], minlength=n).double()

    def heads(self) -> list[dict[str, float]]:
        edges = self.edges.clamp(min=1)
        rows = []
        for h in range(len(self.edges)):
            row = {
                "sparsity": float(self.sparsity_sum[h]) / max(self.seqs, 1),
                "support_mean": float(self.edges[h] / self.queries[h].clamp(min=1)),
                "support_max": int(self.support_max[h]),
                **{f"near_{d}": float(self.near[d][h] / edges[h]) for d in NEAR},
                "first_token": float(self.first[h] / edges[h]),
                "entropy": float(self.entropy[h] / self.queries[h].clamp(min=1)),
            }
            rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        return rows


def gold_statistics(
    data: QKData, split: str = "eval", *, max_seqs: int | None = None, batch_size: int = 8
) -> dict[str, Any]:
    """Statistics of the gold graph of ``data``'s ``split``, per layer and head (module docstring).

    Args:
        data: the dataset.
        split: the split to measure (``eval`` by default, as the card's gold sparsity).
        max_seqs: measure only the split's first ``max_seqs`` sequences (all by default).
        batch_size: sequences per batch (memory grows as ``batch · heads · n²`` floats).

    Returns:
        ``{"split", "sequences", "alpha", "causal", "layers": [{"layer", "heads": [...],
        "mean": {...}, "by_distance": [...]}], "mean": {...}}``; a layer's ``mean`` averages
        its heads, the top-level ``mean`` its layers.

    Raises:
        ValueError: when ``max_seqs`` or ``batch_size`` is below 1.
    """
    from sparsebench.methods import gold_graph, valid_pairs

    if max_seqs is not None and max_seqs < 1:
        raise ValueError(f"max_seqs must be >= 1, got {max_seqs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    part = data.split(split)
    if max_seqs is not None and max_seqs < len(part):
        part = part.select(list(range(max_seqs)))
    layers = []
    for layer in range(part.num_layers):
        totals = None
        for b in part.batches(layer, batch_size):
            S, H, n, D = b.q.shape
            totals = totals or _Totals(H, int(part.lengths.max()))
            q, k = b.q.float(), b.k.float()
            gold = gold_graph(q, k, alpha=part.alpha, lengths=b.lengths, causal=part.causal)
            valid = valid_pairs(S, n, n, b.lengths, part.causal).expand(S, H, n, n)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
            # Invalid keys far below every score (a row of padding only stays finite).
            probs = _entmax_rows(scores.masked_fill(~valid, -1e9), part.alpha)
            real_q = valid.any(-1)[:, :1]  # (S, 1, n)
            probs = torch.where(real_q.unsqueeze(-1), probs, 0.0)
            totals.add(gold.to_dense() & valid, probs, valid, real_q)
        heads = totals.heads()
        mean = {s: round(sum(h[s] for h in heads) / len(heads), 4) for s in STAT_NAMES}
        mean["support_max"] = max(h["support_max"] for h in heads)
        layers.append(
            {
                "layer": layer,
                "heads": heads,
                "mean": mean,
                "by_distance": totals.by_distance.tolist(),
            }
        )
    overall = {s: round(sum(x["mean"][s] for x in layers) / len(layers), 4) for s in STAT_NAMES}
    overall["support_max"] = max(x["mean"]["support_max"] for x in layers)
    return {
        "split": split,
        "sequences": len(part),
        "alpha": float(part.alpha),
        "causal": bool(part.causal),
        "layers": layers,
        "mean": overall,
    }
