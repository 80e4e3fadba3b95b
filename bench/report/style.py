"""One look for every figure: a fixed colour, marker and line per method, and the theme.

Methods of one family share a hue in distinct shades, from seaborn's colour-blind-safe
``"colorblind"`` palette:

* Sparsefinder variants: blue;
* structured patterns (window, BigBird, Longformer, OpenAI fixed): orange;
* hashing and clustering (Reformer, routing): green;
* DSA: reddish purple;
* reference rows (gold, full, top-k oracle, random) and the dense kernels of the speed plots
  (every baseline of :data:`~sparsebench.bench.speed_cases.DENSE`): grey and black, dashed.

Within a family the shades differ in lightness and every registered method has its own marker,
so two methods never look alike, in colour or in grey scale. A method this module does not
know (a plugin) gets a colour and marker chosen from a hash of its name: the same on every call
and in every process. This module is the one source of colours by method name: every figure
(leaderboard plots, the speed plot, ``show``) draws a method through :func:`method_style`.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from matplotlib.colors import to_hex, to_rgb

from .tables import display_name, is_reference

__all__ = [
    "FAMILIES",
    "family_of",
    "figure_context",
    "legend_handles",
    "method_style",
    "ordered",
]

#: The colour-blind palette of seaborn 0.13 (``sns.color_palette("colorblind")``).
_CB = {
    "blue": "#0173b2",
    "orange": "#de8f05",
    "green": "#029e73",
    "vermillion": "#d55e00",
    "purple": "#cc78bc",
    "brown": "#ca9161",
    "grey": "#949494",
}

#: Family -> (base hue, members in legend order, each with its marker).
FAMILIES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "Sparsefinder": (
        _CB["blue"],
        (
            ("sparsefinder_kmeans", "o"),
            ("sparsefinder_distance", "s"),
            ("sparsefinder_quantize", "D"),
            ("sparsefinder_blocks", "^"),
        ),
    ),
    "structured": (
        _CB["orange"],
        (("window", "v"), ("bigbird", "P"), ("longformer", "X"), ("openai_fixed", "h")),
    ),
    "hashing/clustering": (
        _CB["green"],
        (("reformer", "<"), ("routing", ">"), ("routing_trained", "p")),
    ),
    "DSA": (_CB["purple"], (("dsa", "d"),)),
    "reference": (
        "#000000",
        (("gold", "*"), ("full", "H"), ("topk_oracle", "8"), ("random", "x")),
    ),
    "dense kernel": (
        "#000000",
        (
            ("sdpa", "o"),
            ("sdpa_flash", "^"),
            ("sdpa_efficient", "v"),
            ("xformers", "s"),
            ("dense_entmax", "o"),
            ("entmax15_full", "s"),
            ("entmax_bisect_full", "D"),
            ("adasplash", "^"),
            ("adasplash_block_mask", "v"),
            ("adasplash_no_block_mask", "<"),
        ),
    ),
}

#: Fixed greys of the reference rows and dense kernels (black is the exact one).
_GREYS = {
    "gold": "#000000",
    "full": "#5f5f5f",
    "topk_oracle": "#7a7a7a",
    "random": "#a8a8a8",
    "sdpa": "#000000",
    "sdpa_flash": "#3d3d3d",
    "sdpa_efficient": "#5f5f5f",
    "xformers": "#808080",
    "dense_entmax": "#000000",
    "entmax15_full": "#6b6b6b",
    "entmax_bisect_full": "#8c8c8c",
    "adasplash": "#3d3d3d",
    "adasplash_block_mask": "#525252",
    "adasplash_no_block_mask": "#767676",
}
_GREY_FAMILIES = ("reference", "dense kernel")
#: Hues of methods not listed (plugins): apart from every family's hue.
_UNKNOWN_HUES = (_CB["vermillion"], "#ece133", "#7b68c8")
_UNKNOWN_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "h", "<", ">", "p", "d")
_ORDER = {m: i for i, m in enumerate(m for _, ms in FAMILIES.values() for m, _ in ms)}


def _shade(base: str, index: int, count: int) -> str:
    """The ``index``-th of ``count`` shades of ``base``: darkest first, same hue."""
    h, lum, s = colorsys.rgb_to_hls(*to_rgb(base))
    if count == 1:
        return to_hex(to_rgb(base))
    lo, hi = 0.30, 0.62  # light enough to tell apart, dark enough to read on white
    lum = lo + (hi - lo) * index / (count - 1)
    return to_hex(colorsys.hls_to_rgb(h, lum, min(1.0, s * 1.05)))


def family_of(name: str) -> str:
    """The family a method belongs to; ``"reference"`` or ``"other"`` for methods not listed."""
    for family, (_, members) in FAMILIES.items():
        if any(name == m for m, _ in members):
            return family
    return "reference" if is_reference(name) else "other"


def _digest(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def method_style(name: str) -> dict:
    """How a method is drawn in every figure.

    Args:
        name: the registered method name (a speed spec ``name:k=v`` counts as ``name``).

    Returns:
        ``{"color", "marker", "linestyle", "label"}``: a hex colour, a matplotlib marker,
        ``"-"`` (``"--"`` for reference rows and dense kernels) and the display name (the
        method's ``label`` where it declares one).
    """
    name = name.split(":", 1)[0]
    family = family_of(name)
    if family in FAMILIES:
        base, members = FAMILIES[family]
        i = next(i for i, (m, _) in enumerate(members) if m == name)
        color = _GREYS[name] if family in _GREY_FAMILIES else _shade(base, i, len(members))
        marker = members[i][1]
    else:
        h = _digest(name)
        base = _UNKNOWN_HUES[h % len(_UNKNOWN_HUES)]
        color = "#8c8c8c" if family == "reference" else _shade(base, (h >> 8) % 3, 3)
        marker = _UNKNOWN_MARKERS[(h >> 16) % len(_UNKNOWN_MARKERS)]
    dashed = family in _GREY_FAMILIES or family == "reference"
    return {
        "color": color,
        "marker": marker,
        "linestyle": "--" if dashed else "-",
        "label": display_name(name),
    }


def ordered(names: Iterable[str]) -> list[str]:
    """Distinct method names in legend order.

    Listed families first, in :data:`FAMILIES` order, then methods not listed (plugins) by
    name, then reference rows and dense kernels.
    """

    def key(n: str) -> tuple[int, int, str]:
        grey = family_of(n) in _GREY_FAMILIES
        group = 2 if grey else (0 if n in _ORDER else 1)
        return (group, _ORDER.get(n, 0), n)

    return sorted(dict.fromkeys(names), key=key)


def legend_handles(names: Iterable[str]) -> list:
    """One legend entry (line and marker) per method, in :func:`ordered` order."""
    from matplotlib.lines import Line2D

    out = []
    for n in ordered(names):
        st = method_style(n)
        out.append(
            Line2D(
                [],
                [],
                color=st["color"],
                marker=st["marker"],
                linestyle=st["linestyle"],
                markersize=6,
                label=st["label"],
            )
        )
    return out


@contextmanager
def figure_context() -> Iterator:
    """``matplotlib.pyplot`` on the file-only Agg backend, themed for the block only.

    The seaborn ``whitegrid`` style is applied through ``rc_context``, so a notebook's own
    settings are untouched after the figure is written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85)}
    rc.update({"legend.frameon": False, "savefig.bbox": "tight", "savefig.dpi": 120})
    with plt.rc_context(rc):
        yield plt
