"""Leaderboard plots: Pareto frontiers, task accuracy and speed, drawn with seaborn."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .tables import display_name

__all__ = ["accuracy_plot", "pareto_plot", "speed_plot"]


def _pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, with the seaborn theme set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    return plt, sns


def pareto_plot(front: pd.DataFrame, avg: pd.DataFrame, dataset: str, path: Path) -> None:
    """Recall against sparsity: each method's frontier, with the gold graph's sparsity marked."""
    plt, sns = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    f = front.copy()
    f["name"] = f["method"].map(display_name)
    sns.lineplot(
        data=f,
        x="sparsity",
        y="recall",
        hue="name",
        style="name",
        markers=True,
        dashes=False,
        sort=True,
        ax=ax,
        estimator=None,
    )
    gold = float(avg["gold_sparsity"].mean())
    ax.axvline(gold, color="black", ls="--", lw=1)
    ax.annotate(
        f"gold graph sparsity {gold:.3f}\n(no method passes it at recall 1)",
        (gold, 0.02),
        xytext=(-8, 0),
        textcoords="offset points",
        ha="right",
        fontsize=8,
    )
    ax.set_xlim(max(0.0, min(0.5, f["sparsity"].min() - 0.02)), 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{dataset}: recall against sparsity (Pareto frontier of each method)")
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_plot(acc: pd.DataFrame, avg: pd.DataFrame, dataset: str, path: Path) -> bool:
    """Task accuracy against graph sparsity, one line per method; False if nothing to draw."""
    j = acc.merge(avg[["method_id", "sparsity", "recall"]], on="method_id", how="inner")
    if j.empty:
        return False
    j["name"] = j["method"].map(display_name)
    plt, sns = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    # One point per configuration (a method's configurations do not form a curve).
    sns.scatterplot(
        data=j.sort_values("sparsity"),
        x="sparsity",
        y="accuracy",
        hue="name",
        style="name",
        s=22,
        alpha=0.7,
        ax=ax,
    )
    gold = acc[acc["method"] == "gold"]
    if len(gold):
        ax.axhline(float(gold["accuracy"].iloc[0]), color="black", ls="--", lw=1)
        ax.annotate(
            "full α-entmax attention",
            (0.01, float(gold["accuracy"].iloc[0])),
            xycoords=("axes fraction", "data"),
            xytext=(0, 4),
            textcoords="offset points",
            fontsize=8,
        )
    task = acc["task"].iloc[0] if "task" in acc else "task"
    what = "embedding cosine" if task == "embedding-fidelity" else f"{task} accuracy"
    ax.set_ylabel("cosine to full-attention embedding" if "cosine" in what else "accuracy")
    ax.set_title(f"{dataset}: {what} with the predicted graph replacing attention")
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def speed_plot(t: pd.DataFrame, path: Path) -> None:
    """Time and peak memory against N (log-log), one line per case of :func:`speed_table`."""
    plt, sns = _pyplot()
    t = t.copy()
    t["case"] = (
        t["spec"]
        + " ("
        + t["normalizer"]
        + ", "
        + t["device"]
        + t["path"].map(lambda p: f", {p}" if p else "")
        + ")"
    )
    # Peaks below the resolution of the RSS measure read 0: not drawable on a log axis.
    t["peak_mb"] = t["peak_mb"].where(t["peak_mb"] > 0)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, col, label in (
        (axes[0], "time_s", "end-to-end seconds (predict + layout + kernel)"),
        (axes[1], "peak_mb", "peak extra memory (MB)"),
    ):
        sns.lineplot(
            data=t,
            x="n",
            y=col,
            hue="case",
            style="case",
            markers=True,
            dashes=False,
            estimator=None,
            ax=ax,
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("Time and memory against sequence length (log-log), dense baselines included")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
