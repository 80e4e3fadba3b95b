"""Pieces the leaderboard figures share: interval bars, step frontiers and the density axis."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = [
    "DENSITY_TICKS",
    "density_axis",
    "draw_frontier",
    "interval_errors",
    "marker_kw",
    "sort_bins",
]

#: Density ticks of the log axis (sparsity 0, 0.5, 0.8, 0.9, ... read on the top axis).
DENSITY_TICKS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001)


def interval_errors(df: pd.DataFrame, metric: str) -> np.ndarray | None:
    """Asymmetric error-bar lengths ``(2, len(df))`` from ``<metric>_lo`` / ``<metric>_hi``.

    Returns None when the columns are missing or hold no finite value (records written before
    intervals were kept): those figures are drawn without bars. Rows without a finite interval
    get bars of length 0; a bound on the wrong side of the point estimate gives length 0 too.
    """
    lo_col, hi_col = f"{metric}_lo", f"{metric}_hi"
    if lo_col not in df or hi_col not in df:
        return None
    value = pd.to_numeric(df[metric], errors="coerce").to_numpy(float)
    lo = pd.to_numeric(df[lo_col], errors="coerce").to_numpy(float)
    hi = pd.to_numeric(df[hi_col], errors="coerce").to_numpy(float)
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(value)
    if not ok.any():
        return None
    below = np.where(ok, np.clip(value - lo, 0, None), 0.0)
    above = np.where(ok, np.clip(hi - value, 0, None), 0.0)
    return np.vstack([below, above])


def draw_frontier(
    ax,
    g: pd.DataFrame,
    y: str,
    style: dict,
    *,
    density: bool,
    floor: float = 0.0,
    markersize: float = 4.5,
) -> bool:
    """One method's frontier on ``ax`` as the step curve whose area is the summary's AUC.

    The curve is ``R(s)`` = the best ``y`` among the method's configurations of sparsity at
    least ``s``: from sparsity 0 it holds the value of the least sparse frontier point, and
    between two frontier points it takes the value of the sparser one. Markers sit on the
    configurations; interval bars are drawn where ``<y>_lo/_hi`` (and ``sparsity_lo/_hi``, as
    horizontal bars) are present.

    Args:
        ax: the axes.
        g: the method's frontier rows (columns ``sparsity`` and ``y``).
        y: the column on the vertical axis.
        style: :func:`~sparsebench.bench.report.style.method_style` of the method.
        density: x is the density ``1 − sparsity`` (for a log axis) instead of sparsity.
        floor: with ``density``, points of density at or below it are left out (a log axis
            cannot show density 0).
        markersize: marker size in points.

    Returns:
        Whether interval bars were drawn.
    """
    g = g.sort_values("sparsity", kind="stable")
    if density:
        g = g[(1.0 - g["sparsity"]) > floor]
    if g.empty:
        return False
    s = g["sparsity"].to_numpy(float)
    v = g[y].to_numpy(float)
    px = 1.0 - s if density else s
    start = 1.0 if density else 0.0
    line = {"color": style["color"], "linestyle": style["linestyle"]}
    # From sparsity 0 to the least sparse configuration the curve carries that point's value:
    # drawn faint, so that a method whose configurations are all sparse does not read as one
    # measured across the whole axis.
    ax.plot([start, px[0]], [v[0], v[0]], lw=0.9, alpha=0.3, **line)
    ax.plot(px, v, drawstyle="steps-pre", lw=1.4, alpha=0.9, **line)
    ax.plot(
        px,
        v,
        linestyle="none",
        marker=style["marker"],
        color=style["color"],
        **marker_kw(style, markersize),
        zorder=3,
    )
    return _interval_bars(ax, g, px, v, y, style, density=density)


def _interval_bars(ax, g, px, v, y: str, style: dict, *, density: bool) -> bool:
    """Error bars of ``y`` (vertical) and sparsity (horizontal) where intervals exist."""
    yerr = interval_errors(g, y)
    xerr = interval_errors(g, "sparsity")
    if xerr is not None and density:
        xerr = xerr[::-1]  # density = 1 − sparsity: the sparsity bound below is density's above
    if yerr is None and xerr is None:
        return False
    ax.errorbar(
        px,
        v,
        yerr=yerr,
        xerr=xerr,
        fmt="none",
        ecolor=style["color"],
        elinewidth=0.8,
        capsize=0,
        alpha=0.6,
        zorder=2,
    )
    return True


_THIN_MARKERS = ("x", "+", "*", "d", "1", "2", "3", "4")


def marker_kw(style: dict, size: float) -> dict:
    """Marker size and edge for ``style``: slim markers drawn larger, with no white rim.

    Slim markers (crosses, stars, thin diamonds) look smaller than a circle of the same size,
    and a white rim would eat them; filled ones get a thin white rim that keeps neighbouring
    points apart.
    """
    if style["marker"] in _THIN_MARKERS:
        return {
            "markersize": size * 1.35,
            "markeredgecolor": style["color"],
            "markeredgewidth": 0.9,
        }
    return {"markersize": size, "markeredgecolor": "white", "markeredgewidth": 0.6}


def density_axis(ax, smallest: float, *, top: bool = True) -> float:
    """Make ``ax``'s x a log density axis, sparser to the right, with sparsity read on top.

    Args:
        ax: the axes.
        smallest: the smallest positive density to show.
        top: add the sparsity scale along the top.

    Returns:
        The axis floor: points of lower density are outside the axes.
    """
    floor = max(min(smallest, 0.5) / 1.3, 1e-4)
    ax.set_xscale("log")
    ax.set_xlim(1.12, floor)  # reversed: sparser to the right, as on the linear panel
    ticks = [t for t in DENSITY_TICKS if t >= floor]
    ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("density = 1 − sparsity (log scale)")
    if top:
        sec = ax.secondary_xaxis("top")
        sec.set_xticks(ticks, labels=[_sparsity_text(t) for t in ticks])
        sec.minorticks_off()
        sec.set_xlabel("sparsity", fontsize="small")
        sec.tick_params(labelsize="small")
    return floor


def _sparsity_text(density: float) -> str:
    s = 1.0 - density
    digits = max(0, -math.floor(math.log10(density) + 1e-9)) if density < 1 else 0
    return f"{s:.{digits}f}" if digits else ("0" if s == 0 else f"{s:g}")


def sort_bins(bins) -> list[str]:
    """Length-bin labels (``"0-128"``, ``"128-256"`` ...) in order of their lower bound."""

    def low(b: str) -> float:
        head = str(b).replace("–", "-").split("-", 1)[0].strip()
        try:
            return float(head)
        except ValueError:
            return math.inf

    return sorted(dict.fromkeys(str(b) for b in bins), key=lambda b: (low(b), b))
