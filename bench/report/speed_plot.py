"""The speed figure: time and peak memory against sequence length, one column per normaliser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator

from .plot_parts import marker_kw
from .style import figure_context, method_style, ordered

__all__ = ["speed_plot"]

_NORMALISERS = ("softmax", "entmax")
#: Line styles of a method's second, third ... case in one panel (the first is its own style).
_CASE_LINES = ("-", ":", "-.", (0, (5, 2)), (0, (1, 1)))


def _cases(t: pd.DataFrame, devices: int) -> pd.DataFrame:
    """One label per measured case: spec, and path and device where they tell cases apart."""
    t = t.copy()
    t["method"] = t["spec"].astype(str).str.split(":").str[0]
    path = t["path"].fillna("").astype(str) if "path" in t else pd.Series("", index=t.index)
    t["case"] = t["spec"].astype(str) + path.map(lambda p: f" [{p}]" if p else "")
    if devices > 1:
        t["case"] += " (" + t["device"].astype(str) + ")"
    return t


def _case_styles(cases: pd.DataFrame) -> dict[str, dict]:
    """Each case's style: its method's colour and marker.

    Cases of one method differ in line style and in open against filled markers.
    """
    out: dict[str, dict] = {}
    seen: dict[str, int] = {}
    order = {m: i for i, m in enumerate(ordered(cases["method"]))}
    rows = cases.drop_duplicates("case")
    rows = rows.assign(o=rows["method"].map(order)).sort_values(["o", "case"])
    for _, r in rows.iterrows():
        st = dict(method_style(r["method"]))
        i = seen.get(r["method"], 0)
        seen[r["method"]] = i + 1
        if i:
            st["linestyle"] = _CASE_LINES[i % len(_CASE_LINES)]
        st["fill"] = "full" if i % 2 == 0 else "none"
        st["label"] = r["case"]
        out[r["case"]] = st
    return out


def _length_axes(axes, ns: np.ndarray) -> None:
    """Log–log axes with a tick at each measured length and readable log ticks on y."""
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns, labels=[f"{int(n):,}" for n in ns])
        ax.minorticks_off()
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlim(ns.min() / 1.25, ns.max() * 1.25)


def speed_plot(t: pd.DataFrame, path: Path) -> None:
    """Time and peak memory against N (log–log), softmax and entmax in separate columns.

    Each case of :func:`~sparsebench.bench.report.speed_tables.speed_table` is one line in
    its method's colour and marker (dense kernels black and grey, dashed). Cases of one panel
    are nudged apart along N by a few percent so that no line hides another; the ticks mark
    the measured lengths.

    Args:
        t: the speed table (``spec``, ``path``, ``normalizer``, ``device``, ``n``, ``time_s``,
            ``peak_mb``).
        path: the PNG to write.
    """
    devices = t["device"].nunique() if "device" in t else 1
    t = _cases(t, devices)
    # Peaks below the resolution of the RSS measure read 0: not drawable on a log axis.
    t["peak_mb"] = t["peak_mb"].where(t["peak_mb"] > 0)
    norms = [n for n in _NORMALISERS if (t["normalizer"] == n).any()]
    norms += sorted(set(t["normalizer"]) - set(norms))
    with figure_context() as plt:
        fig, axes = plt.subplots(
            2, len(norms), figsize=(6.4 * len(norms), 9), squeeze=False, sharex="col"
        )
        for j, norm in enumerate(norms):
            part = t[t["normalizer"] == norm]
            styles = _case_styles(part)
            step = 0.035  # octaves between neighbouring cases
            for c, (case, st) in enumerate(styles.items()):
                g = part[part["case"] == case].sort_values("n")
                shift = 2.0 ** ((c - (len(styles) - 1) / 2) * step)
                mk = marker_kw(st, 6)
                if st["fill"] == "none":  # an open marker is only its edge
                    mk.update(markeredgecolor=st["color"], markeredgewidth=1.1)
                for ax, col in ((axes[0, j], "time_s"), (axes[1, j], "peak_mb")):
                    ax.plot(
                        g["n"] * shift,
                        g[col],
                        color=st["color"],
                        linestyle=st["linestyle"],
                        marker=st["marker"],
                        fillstyle=st["fill"],
                        **mk,
                        lw=1.3,
                        label=st["label"],
                    )
            _length_axes(axes[:, j], np.sort(part["n"].unique()))
            axes[0, j].set_title(f"{norm} attention")
            axes[0, j].set_ylabel("end-to-end seconds (predict + layout + kernel)")
            axes[1, j].set_ylabel("peak extra memory (MB)")
            axes[1, j].set_xlabel("sequence length N")
            axes[1, j].legend(
                loc="upper center",
                bbox_to_anchor=(0.5, -0.14),
                fontsize="small",
                title=f"{norm}: method [execution path]",
                title_fontsize="small",
            )
        fig.suptitle("Time and peak memory against sequence length (log–log), dense kernels dashed")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
