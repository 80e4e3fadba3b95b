"""Leaderboard plots: Pareto frontiers, task accuracy, quality across lengths and speed.

Every figure draws each method in its :func:`~sparsebench.bench.report.style.method_style`,
puts the legend outside the axes and draws 95% intervals where the frame carries
``<metric>_lo`` / ``<metric>_hi`` columns with finite values (records written before intervals
were kept are drawn without bars, never with made-up ones). The speed plot is in
:mod:`.speed_plot`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .intervals import plot_run
from .plot_parts import density_axis, draw_frontier, interval_errors, marker_kw, sort_bins
from .speed_plot import speed_plot
from .style import figure_context, legend_handles, method_style, ordered
from .summary import pareto_frontier

__all__ = ["accuracy_plot", "length_plot", "pareto_plot", "speed_plot"]

_STEP_NOTE = (
    "Step curves: the best {y} among a method's configurations at least this sparse; faint "
    "from sparsity 0 to a method's least sparse configuration."
)
_BAR_NOTE = " Bars: 95% bootstrap intervals."


def _legend(fig, names, extra=()) -> None:
    """The figure's legend, right of the axes: the methods, then ``extra`` handles."""
    fig.legend(
        handles=[*legend_handles(names), *extra],
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize="small",
        title="method",
        title_fontsize="small",
    )


def _positive_min(values) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(v.min()) if v.size else 0.01


def pareto_plot(front: pd.DataFrame, avg: pd.DataFrame, dataset: str, path: Path) -> None:
    """Recall against density: each method's frontier on a log and a linear axis.

    Its length is the two panels drawn from the same frontier frames in one figure; splitting would
    pass every axis and frame around.

    Left: density ``1 − sparsity`` on a log axis (sparser to the right; sparsity is read on
    the top axis), where the 0.9–1.0 sparsity region is spread out. Right: the same frontiers
    against sparsity on a linear axis, as the paper draws them. The gold graph's own density is
    marked on both.

    Args:
        front: :func:`~sparsebench.bench.report.summary.pareto_frontier` rows of one dataset
            (optional ``recall_lo``/``recall_hi``, ``sparsity_lo``/``sparsity_hi``).
        avg: the layer averages (for the gold graph's sparsity).
        dataset: the dataset's name, for the title.
        path: the PNG to write.
    """
    names = ordered(front["method"])
    gold = (
        float(avg["gold_sparsity"].mean())
        if "gold_sparsity" in avg and avg["gold_sparsity"].notna().any()
        else math.nan
    )
    smallest = _positive_min(1.0 - front["sparsity"].to_numpy(float))
    with figure_context() as plt:
        fig, (log_ax, lin_ax) = plt.subplots(
            1, 2, figsize=(13, 5.4), gridspec_kw={"width_ratios": [1.3, 1]}
        )
        floor = density_axis(log_ax, min(smallest, 1 - gold if gold < 1 else smallest))
        bars = False
        for m in names:
            g = front[front["method"] == m]
            st = method_style(m)
            bars |= draw_frontier(log_ax, g, "recall", st, density=True, floor=floor)
            draw_frontier(lin_ax, g, "recall", st, density=False, markersize=3.5)
        extra = []
        if math.isfinite(gold):
            for ax, x in ((log_ax, 1.0 - gold), (lin_ax, gold)):
                ax.axvline(x, color="black", ls=":", lw=1.1, zorder=1)
            extra.append(
                Line2D(
                    [],
                    [],
                    color="black",
                    ls=":",
                    lw=1.1,
                    label=f"gold graph's density\n{1 - gold:.3f} (sparsity {gold:.3f})",
                )
            )
        log_ax.set_ylabel("recall of the gold graph")
        log_ax.set_title("log density: the sparse end spread out", fontsize="medium")
        lin_ax.set_xlim(0, 1.0)
        lin_ax.set_xlabel("sparsity (linear)")
        lin_ax.set_title("linear sparsity (as in the paper)", fontsize="medium")
        for ax in (log_ax, lin_ax):
            ax.set_ylim(-0.01, 1.03)
        fig.suptitle(f"{dataset}: recall against density, Pareto frontier of each method")
        note = _STEP_NOTE.format(y="recall") + " The area under a recall curve is the table's AUC."
        fig.text(0.01, -0.01, note + (_BAR_NOTE if bars else ""), fontsize="small", va="top")
        _legend(fig, names, extra)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def _accuracy_frame(acc: pd.DataFrame, avg: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Accuracy records joined with their configuration's layer-averaged sparsity."""
    cols = [c for c in ("method_id", "sparsity", "sparsity_lo", "sparsity_hi") if c in avg]
    j = acc.drop(columns=[c for c in cols[1:] if c in acc]).merge(
        avg[cols].drop_duplicates("method_id"), on="method_id", how="inner"
    )
    j["dataset"] = dataset
    return j[j["accuracy"].notna() & j["sparsity"].notna()]


def _token_note(acc: pd.DataFrame) -> str:
    """How many scored tokens each figure rests on, when the records say so."""
    for col in ("num_tokens", "tokens"):
        if col in acc and acc[col].notna().any():
            n = pd.to_numeric(acc[col], errors="coerce").dropna()
            if n.nunique() == 1:
                return f" Each point: {int(n.iloc[0]):,} held-out tokens."
            return f" Each point: {int(n.min()):,}–{int(n.max()):,} held-out tokens."
    return ""


def accuracy_plot(acc: pd.DataFrame, avg: pd.DataFrame, dataset: str, path: Path) -> bool:
    """Each method's accuracy–sparsity frontier, with intervals; False if nothing to draw.

    A method's frontier is its configurations that no other of its configurations beats on
    both sparsity and accuracy, drawn as a step curve (the best accuracy at least this
    sparse) on the log density axis of :func:`pareto_plot`. Full attention (the gold graph
    gives exactly α-entmax attention) is the horizontal reference line.

    Args:
        acc: accuracy records (``method``, ``method_id``, ``accuracy``, optional
            ``accuracy_lo``/``accuracy_hi``, ``task``, ``num_tokens`` or ``tokens``).
        avg: the layer averages (each configuration's sparsity, optional intervals).
        dataset: the dataset's name, for the title.
        path: the PNG to write.
    """
    if acc is None or acc.empty or "accuracy" not in acc:
        return False
    acc = plot_run(acc)
    j = _accuracy_frame(acc, avg, dataset)
    if j.empty:
        return False
    front = pareto_frontier(j, x="sparsity", y="accuracy")
    names = ordered(front["method"])
    ref = next((r for r in ("gold", "full") if (acc["method"] == r).any()), None)
    task = str(acc["task"].iloc[0]) if "task" in acc else "task"
    cosine = task == "embedding-fidelity"
    with figure_context() as plt:
        fig, ax = plt.subplots(figsize=(9.5, 5.6))
        floor = density_axis(ax, _positive_min(1.0 - front["sparsity"].to_numpy(float)))
        bars = False
        for m in names:
            st = method_style(m)
            bars |= draw_frontier(
                ax, front[front["method"] == m], "accuracy", st, density=True, floor=floor
            )
        extra = []
        if ref is not None:
            r = acc[acc["method"] == ref].iloc[[0]]
            level = float(r["accuracy"].iloc[0])
            ax.axhline(level, color="black", ls="-", lw=0.9, zorder=1)
            err = interval_errors(r, "accuracy")
            if err is not None:
                ax.axhspan(level - err[0, 0], level + err[1, 0], color="black", alpha=0.08, lw=0)
            label = f"full α-entmax attention\n{level:.4f}" + (
                f" [{level - err[0, 0]:.4f}, {level + err[1, 0]:.4f}]" if err is not None else ""
            )
            extra.append(Line2D([], [], color="black", lw=0.9, label=label))
        ax.set_ylabel("cosine to the full-attention embedding" if cosine else f"{task} accuracy")
        what = "embedding fidelity" if cosine else f"{task} accuracy"
        ax.set_title(
            f"{dataset}: {what} with the predicted graph replacing attention\n"
            f"(each method's {'fidelity' if cosine else 'accuracy'}–sparsity frontier)",
            fontsize="medium",
        )
        note = _STEP_NOTE.format(y="accuracy") + (_BAR_NOTE if bars else "") + _token_note(acc)
        fig.text(0.01, -0.01, note, fontsize="small", va="top")
        _legend(fig, names, extra)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return True


def _points_with_bars(ax, g: pd.DataFrame, y: str, st: dict) -> bool:
    """One method's points at ``g["x"]`` joined by a thin line; True if bars were drawn."""
    ax.plot(
        g["x"],
        g[y],
        color=st["color"],
        ls=st["linestyle"],
        lw=1,
        marker=st["marker"],
        **marker_kw(st, 7),
        zorder=3,
    )
    err = interval_errors(g, y)
    if err is None:
        return False
    ax.errorbar(g["x"], g[y], yerr=err, fmt="none", ecolor=st["color"], elinewidth=1.1, capsize=2.5)
    return True


def length_plot(df: pd.DataFrame, dataset: str, path: Path) -> bool:
    """Recall and sparsity per sequence-length bin at each method's recall-0.95 configuration.

    Args:
        df: one row per (method, length bin): ``method``, ``bin`` (``"0-128"`` ...),
            ``num_sequences``, ``recall``, ``sparsity``, optional ``_lo``/``_hi`` intervals.
        dataset: the dataset's name, for the title.
        path: the PNG to write.

    Returns:
        False (nothing written) when the frame has no rows.
    """
    if df is None or df.empty:
        return False
    bins = sort_bins(df["bin"])
    pos = {b: i for i, b in enumerate(bins)}
    names = ordered(df["method"])
    width = 0.7 / max(1, len(names))
    counts = (
        df.groupby(df["bin"].astype(str))["num_sequences"].max() if "num_sequences" in df else {}
    )
    with figure_context() as plt:
        fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
        bars = False
        for i, m in enumerate(names):
            g = df[df["method"] == m].copy()
            g["x"] = g["bin"].astype(str).map(pos) + (i - (len(names) - 1) / 2) * width
            for ax, metric in zip(axes, ("recall", "sparsity"), strict=True):
                bars |= _points_with_bars(ax, g.sort_values("x"), metric, method_style(m))
        labels = [
            f"{b.replace('-', '–')}\n{int(counts[b])} seqs" if b in counts else b for b in bins
        ]
        for ax, metric in zip(axes, ("recall", "sparsity"), strict=True):
            ax.set_xticks(range(len(bins)), labels=labels)
            ax.set_xlim(-0.6, len(bins) - 0.4)
            ax.set_xlabel("sequence length (tokens)")
            ax.set_ylabel(metric)
            ax.grid(axis="x", visible=False)
        axes[0].axhline(0.95, color="black", ls=":", lw=1)
        fig.suptitle(
            f"{dataset}: quality across sequence lengths at each method's recall-0.95 configuration"
        )
        note = "Each bin: the paper's aggregation over its sequences; dotted: recall 0.95." + (
            " Bars: 95% bootstrap intervals over the bin's sequences." if bars else ""
        )
        fig.text(0.01, -0.01, note, fontsize="small", va="top")
        _legend(fig, names)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return True
