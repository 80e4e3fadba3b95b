"""A picture of one head on one sequence: the gold graph beside a method's prediction."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import torch

from sparsebench.datasets import QKData
from sparsebench.methods import Method, gold_graph

from ..metrics import graph_metrics
from .style import figure_context, method_style

__all__ = ["CELL_COLORS", "show"]

#: Cell colours of the right panel, from the colour-blind palette: blue and vermillion stay
#: apart under every common colour-vision deficiency, grey is lighter than both.
CELL_COLORS = {
    "none": "#ffffff",
    "predicted only": "#bdbdbd",
    "gold only": "#d55e00",
    "both": "#0173b2",
}


def _cells(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """0: neither, 1: predicted only, 2: gold only (missed), 3: both (found)."""
    right = torch.zeros(g.shape, dtype=torch.long)
    right[p & ~g] = 1
    right[g & ~p] = 2
    right[g & p] = 3
    return right


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

    On the right, blue cells are gold edges the method predicted, vermillion cells gold edges
    it missed and grey cells predicted edges outside the gold graph (colours of
    :data:`CELL_COLORS`); the legend gives each kind's count.

    Raises:
        ValueError: if ``seq`` or ``head`` is out of range.
    """
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
    right = _cells(g, p)
    name = data.meta.get("name", "data")
    label = method_style(method.name)["label"]
    out = Path(out or f"show-{name}-{method.name}-L{layer}H{head}.png")
    title = textwrap.fill(method.id if label == method.name else f"{label}: {method.id}", 60)
    rec, sp = m["per_head"]["recall"][head], m["per_head"]["sparsity"][head]
    _draw(
        g,
        right,
        f"{title}\nrecall {rec:.3f}, sparsity {sp:.3f}",
        f"{name}, eval sequence {seq} ({L} tokens), layer {layer}, head {head}",
        out,
    )
    return out


def _draw(g: torch.Tensor, right: torch.Tensor, title: str, suptitle: str, out: Path) -> None:
    """The two panels of :func:`show`: gold graph, then the prediction's cells, with a legend."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    counts = [int((right == i).sum()) for i in (3, 2, 1)]
    with figure_context() as plt:
        fig, axes = plt.subplots(1, 2, figsize=(12, 6.6), layout="compressed")
        axes[0].imshow(
            g.numpy(),
            cmap=ListedColormap(["white", "black"]),
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        axes[0].set_title(f"gold α-entmax graph ({int(g.sum()):,} edges)", fontsize="medium")
        cmap = ListedColormap(list(CELL_COLORS.values()))
        axes[1].imshow(right.numpy(), cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
        axes[1].set_title(title, fontsize="medium")
        for ax in axes:
            ax.grid(False)
            ax.set_xlabel("key position")
            ax.set_ylabel("query position")
            for side in ax.spines.values():
                side.set_visible(True)
                side.set_color("#444444")
        kinds = ("found (gold and predicted)", "missed (gold only)", "extra (predicted only)")
        colors = (CELL_COLORS["both"], CELL_COLORS["gold only"], CELL_COLORS["predicted only"])
        axes[1].legend(
            handles=[
                Patch(facecolor=c, edgecolor="#444444", label=f"{kind}: {n:,}")
                for c, kind, n in zip(colors, kinds, counts, strict=True)
            ],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            fontsize="small",
        )
        fig.suptitle(suptitle)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110, bbox_inches="tight")
        plt.close(fig)
