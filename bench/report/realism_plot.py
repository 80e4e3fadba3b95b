"""``realism.png``: where a dataset's gold edges are (``sparsebench datasets info NAME --out DIR``).

Left: the cumulative share of gold edges within distance ``|i − j|`` of the diagonal, one line
per layer (heads pooled). Right: per layer and head, the gold graph's sparsity, as a heat map.
The numbers come from :func:`sparsebench.datasets.realism.gold_statistics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .style import figure_context

__all__ = ["realism_markdown", "realism_plot"]


def realism_plot(stats: dict[str, Any], name: str, path: str | Path) -> Path:
    """Draw ``stats`` of dataset ``name`` into ``path`` (a PNG); returns the path."""
    path = Path(path)
    layers = stats["layers"]
    with figure_context() as plt:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        for layer in layers:
            counts = np.asarray(layer["by_distance"], dtype=float)
            share = np.cumsum(counts) / max(counts.sum(), 1.0)
            dist = np.arange(len(share))
            left.plot(dist + 1, share, label=f"layer {layer['layer']}")
        left.set_xscale("log")
        left.set_xlabel("1 + distance |i − j| from the diagonal")
        left.set_ylabel("share of gold edges within")
        left.set_ylim(0, 1.02)
        left.legend(fontsize="small")
        left.set_title("where the gold edges are", fontsize="medium")
        grid = np.array([[h["sparsity"] for h in layer["heads"]] for layer in layers])
        im = right.imshow(grid, aspect="auto", cmap="viridis", vmin=min(0.5, grid.min()), vmax=1)
        right.set_xlabel("head")
        right.set_ylabel("layer")
        right.set_xticks(range(grid.shape[1]))
        right.set_yticks(range(grid.shape[0]))
        right.grid(False)
        right.set_title("gold sparsity per layer and head", fontsize="medium")
        fig.colorbar(im, ax=right)
        fig.suptitle(
            f"{name}: gold α-entmax graph (α = {stats['alpha']:g}), {stats['split']} split, "
            f"{stats['sequences']} sequences"
        )
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return path


def realism_markdown(stats: dict[str, Any], name: str) -> str:
    """A markdown table of the per-layer means of ``stats`` (and the dataset's mean)."""
    cols = ["sparsity", "support_mean", "support_max", "near_1", "near_3", "near_11"]
    cols += ["first_token", "entropy"]
    head = ["layer", *cols]
    md = [
        f"Gold graph of `{name}` ({stats['split']} split, {stats['sequences']} sequences, "
        f"α = {stats['alpha']:g}, {'causal' if stats['causal'] else 'bidirectional'}): means "
        "over heads; near_d = share of gold edges with |i − j| ≤ d; first_token = share on "
        "key 0; entropy of the entmax rows in nats.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    rows = [(str(x["layer"]), x["mean"]) for x in stats["layers"]] + [("mean", stats["mean"])]
    for label, m in rows:
        cells = [str(m[c]) if c == "support_max" else f"{m[c]:.3f}" for c in cols]
        md.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(md) + "\n"
