"""A picture of one head on one sequence: the gold graph beside a method's prediction."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sparsebench.datasets import QKData
from sparsebench.methods import Method, gold_graph

from ..metrics import graph_metrics

__all__ = ["show"]


def show(
    data: QKData,
    method: Method,
    *,
    layer: int = 0,
    head: int = 0,
    seq: int = 0,
    out: str | os.PathLike | None = None,
) -> Path:
    """Draw gold (left) and predicted (right) graphs of one head; returns the PNG path.

    On the right, green cells are predicted gold edges, red cells gold edges that were missed
    and grey cells predicted edges outside the gold graph.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    ev = data.split("eval") if "eval" in data.split_names else data
    if not 0 <= seq < len(ev):
        raise ValueError(f"seq {seq} out of range: the eval split has {len(ev)} sequences")
    if not 0 <= head < data.num_heads:
        raise ValueError(f"head {head} out of range: the data has {data.num_heads} heads")
    if method.learns:
        method = method.clone().fit(data.split("train"), layer)
    one = ev.select([seq]).layer(layer)
    L = int(one.lengths[0])
    q, k = one.q[:, :, :L], one.k[:, :, :L]
    gold = gold_graph(q, k, alpha=data.alpha, causal=data.causal)
    pred = method.predict(q, k, causal=data.causal)
    m = graph_metrics(pred.index_batch([0]), gold)
    g = gold.to_dense()[0, head]
    p = pred.to_dense()[0, head]
    right = torch.zeros(L, L, dtype=torch.long)
    right[p & ~g] = 1
    right[g & ~p] = 2
    right[g & p] = 3
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    axes[0].imshow(g.numpy(), cmap=ListedColormap(["white", "black"]), interpolation="nearest")
    axes[0].set_title(f"gold α-entmax graph ({int(g.sum())} edges)")
    cmap = ListedColormap(["white", "#bbbbbb", "#d62728", "#2ca02c"])
    axes[1].imshow(right.numpy(), cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
    rec, sp = m["per_head"]["recall"][head], m["per_head"]["sparsity"][head]
    axes[1].set_title(
        f"{method.id}: recall {rec:.3f}, sparsity {sp:.3f}\ngreen: found, red: missed, grey: extra"
    )
    for ax in axes:
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    name = data.meta.get("name", "data")
    fig.suptitle(f"{name}, eval sequence {seq} ({L} tokens), layer {layer}, head {head}")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    out = Path(out or f"show-{name}-{method.name}-L{layer}H{head}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
