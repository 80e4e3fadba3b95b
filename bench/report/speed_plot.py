"""The speed figure: time and peak memory against sequence length, one column per method family.

Columns are the method families of :data:`~sparsebench.bench.report.style.FAMILIES` (plugins in
``other``, reference rows last); rows come in pairs, time above peak memory, one pair per
device and normaliser. Every panel also draws the dense kernels of its normaliser, so each
family reads against the same baseline. Every method keeps the colour and marker
:func:`~sparsebench.bench.report.style.method_style` gives it in every figure.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator

from .plot_parts import marker_kw
from .style import FAMILIES, family_of, figure_context, method_style, ordered

__all__ = ["speed_plot"]

_NORMALISERS = ("softmax", "entmax")
#: Line styles of a method's second, third ... case in one panel (the first is its own style).
_CASE_LINES = ("-", ":", "-.", (0, (5, 2)), (0, (1, 1)))
_DENSE = "dense kernel"
#: Column order: the listed families, plugins, then reference rows.
_COLUMNS = (*(f for f in FAMILIES if f not in ("reference", _DENSE)), "other", "reference")
#: Legend words of a configuration's role (``speed --preset methods``).
_ROLE_WORDS = {"leaderboard+default": "leaderboard = default"}


def _cases(t: pd.DataFrame) -> pd.DataFrame:
    """One label per measured case: spec, path and role (each row of panels is one device)."""
    t = t.copy()
    t["method"] = t["spec"].astype(str).str.split(":").str[0]
    t["family"] = t["method"].map(family_of)
    path = t["path"].fillna("").astype(str) if "path" in t else pd.Series("", index=t.index)
    role = t["role"].fillna("").astype(str) if "role" in t else pd.Series("", index=t.index)
    t["role_rank"] = role.map(lambda r: 0 if "leaderboard" in r else 1)
    t["case"] = (
        t["spec"].astype(str)
        + path.map(lambda p: f" [{p}]" if p else "")
        + role.map(lambda r: f" ({_ROLE_WORDS.get(r, r)} config)" if r else "")
    )
    return t


def _case_styles(cases: pd.DataFrame) -> dict[str, dict]:
    """Each case's style: its method's colour and marker.

    Cases of one method differ in line style and in open against filled markers; a method's
    leaderboard configuration comes first, so it keeps the method's own style.
    """
    out: dict[str, dict] = {}
    seen: dict[str, int] = {}
    order = {m: i for i, m in enumerate(ordered(cases["method"]))}
    rows = cases.sort_values("role_rank").drop_duplicates("case")
    rows = rows.assign(o=rows["method"].map(order)).sort_values(["o", "role_rank", "case"])
    for _, r in rows.iterrows():
        st = dict(method_style(r["method"]))
        i = seen.get(r["method"], 0)
        seen[r["method"]] = i + 1
        if i:
            st["linestyle"] = _CASE_LINES[i % len(_CASE_LINES)]
        st["fill"] = "full" if i % 2 == 0 else "none"
        st["label"] = textwrap.fill(r["case"].replace(",", ", "), 46, subsequent_indent="  ")
        out[r["case"]] = st
    return out


def _length_axes(ax, ns: np.ndarray) -> None:
    """Log–log axes with a tick at each measured length and readable log ticks on y.

    A panel with nothing drawable on a log axis (no positive figure) keeps a linear y axis.
    """
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, labels=[f"{int(n):,}" for n in ns])
    ax.set_xlim(ns.min() / 1.25, ns.max() * 1.25)
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.lines]
    if any((y[np.isfinite(y)] > 0).any() for y in ys):
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_yticks([])
    ax.minorticks_off()


def _draw(axes, part: pd.DataFrame, styles: dict[str, dict]) -> None:
    """The cases of one panel pair (time above memory), nudged apart along N."""
    shown = [c for c in styles if (part["case"] == c).any()]
    step = 0.035  # octaves between neighbouring cases
    for c, case in enumerate(shown):
        st = styles[case]
        g = part[part["case"] == case].sort_values("n")
        shift = 2.0 ** ((c - (len(shown) - 1) / 2) * step)
        mk = marker_kw(st, 6)
        if st["fill"] == "none":  # an open marker is only its edge
            mk.update(markeredgecolor=st["color"], markeredgewidth=1.1)
        for ax, col in zip(axes, ("time_s", "peak_mb"), strict=True):
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


def _shown(t: pd.DataFrame) -> pd.DataFrame:
    """The CPU cases when there are any (GPU cases have ``speed/gpu.png``), else every case."""
    cpu = t["device"].astype(str).str.startswith("cpu") if "device" in t else None
    return t if cpu is None or not cpu.any() else t[cpu]


def speed_plot(t: pd.DataFrame, path: Path) -> None:
    """Time and peak memory against N (log–log), one column per family, every method drawn.

    Each case of :func:`~sparsebench.bench.report.speed_tables.speed_table` is one line in
    its method's colour and marker; a method's leaderboard configuration keeps its own line
    style, its other cases are dotted or dash-dotted with open markers. The dense kernels of a
    panel's normaliser are drawn in every panel (black and grey, dashed). Cases of one panel
    are nudged apart along N by a few percent so that no line hides another; the ticks mark
    the measured lengths. CPU cases only, when there are any.

    Args:
        t: the speed table (``spec``, ``path``, ``normalizer``, ``device``, ``n``, ``time_s``,
            ``peak_mb``; ``role`` where known).
        path: the PNG to write.
    """
    t = _shown(t)
    if "device" not in t:
        t = t.assign(device="cpu")
    t = _cases(t)
    # Peaks below the resolution of the RSS measure read 0: not drawable on a log axis.
    t["peak_mb"] = t["peak_mb"].where(t["peak_mb"] > 0)
    norm_rank = {n: i for i, n in enumerate(_NORMALISERS)}
    groups = sorted(
        t.groupby(["device", "normalizer"]).groups,
        key=lambda g: (norm_rank.get(g[1], len(norm_rank)), g[1], g[0]),
    )
    columns = [f for f in _COLUMNS if (t["family"] == f).any()] or [_DENSE]
    with figure_context() as plt:
        height = 3.2 * 2 * len(groups)
        fig, axes = plt.subplots(
            2 * len(groups), len(columns), figsize=(4.4 * len(columns), height), squeeze=False
        )
        legends = [
            _column(axes[:, j], t, family, groups, first=j == 0) for j, family in enumerate(columns)
        ]
        # Room below the panels for the legends, which the layout leaves out of its sums.
        lines = max(sum(x.get_text().count("\n") + 1 for x in g.get_texts()) for g in legends)
        room = 0.9 + 0.13 * lines
        fig.set_size_inches(4.4 * len(columns), height + room)
        fig.suptitle(
            "Time (predict + layout + kernel) and peak memory against sequence length (log–log), "
            "by method family; dense kernels dashed",
            y=1.0,
        )
        fig.tight_layout(rect=(0, room / (height + room), 1, 0.985))
        fig.savefig(path, bbox_extra_artists=legends)
        plt.close(fig)


def _column(axes, t: pd.DataFrame, family: str, groups: list[tuple], *, first: bool):
    """One family's column of panels, with its legend below (returned).

    The first column names the rows and lists the dense kernels in its legend.
    """
    dense = t[t["family"] == _DENSE]
    styles = {**_case_styles(t[t["family"] == family]), **_case_styles(dense)}
    ns = np.sort(t["n"].unique())
    for i, (device, norm) in enumerate(groups):
        pair = axes[2 * i : 2 * i + 2]
        part = t[(t["device"] == device) & (t["normalizer"] == norm)]
        part = part[part["family"].isin([family, _DENSE])]
        _draw(pair, part, styles)
        for ax in pair:
            _length_axes(ax, ns)
            if family not in part["family"].values:
                ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center")
        if first:
            pair[0].set_ylabel(f"{device}, {norm}\nseconds")
            pair[1].set_ylabel(f"{device}, {norm}\npeak extra MB")
    axes[0].set_title(family)
    axes[-1].set_xlabel("sequence length N")
    order = [st["label"] for st in styles.values()]
    handles = sorted(_handles(axes, keep_dense=first), key=lambda h: order.index(h.get_label()))
    legend = axes[-1].legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.25),
        fontsize="x-small",
        title=f"{family}: config [execution path]",
        title_fontsize="small",
    )
    legend.set_in_layout(False)
    return legend


def _handles(axes, *, keep_dense: bool) -> list:
    """One legend entry per case drawn in a column (dense kernels in the first column only)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for line in ax.lines:
            label = line.get_label()
            dense = family_of(label.split(":")[0].split(" ")[0]) == _DENSE
            if label.startswith("_") or label in seen or (dense and not keep_dense):
                continue
            seen[label] = line
    return list(seen.values())
