"""How a figure with an interval is written, and which figure of a column earns the best mark.

A figure with an interval is printed as ``0.697 ± 0.012``: the half-width of the percentile
interval, rounded to two significant digits, sets the decimals of both (at most
:data:`MAX_DECIMALS`). A figure without an interval keeps its column's format. The best figure
of a column is marked only when its interval does not overlap the runner-up's: a figure that
is best only within noise is not marked, and neither is one without an interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "INTERVAL_NOTE",
    "MAX_DECIMALS",
    "best_position",
    "decimals",
    "format_interval",
    "is_missing",
]

#: The most decimals a figure is printed with.
MAX_DECIMALS = 4

#: What every page says about its intervals.
INTERVAL_NOTE = (
    "± : half-width of the 95% percentile bootstrap interval (1000 resamples): graph metrics "
    "resampled over evaluation sequences, a sequence keeping all its layers and heads "
    "together; task accuracy over evaluation windows; Δ accuracy paired, the same windows "
    "drawn for the method and full attention. Each figure is rounded to what its interval "
    "supports (two significant digits of the half-width set the decimals). AUC, times and "
    "memory have no interval. Bold: the best figure of a column, only where its interval does "
    "not overlap the runner-up's. Figures without ± come from records that hold no "
    "per-sequence (or per-window) values."
)


def is_missing(value) -> bool:
    """Whether a cell holds no figure (None, NaN or an empty string)."""
    if value is None or (isinstance(value, str) and not value):
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def decimals(half_width: float, most: int = MAX_DECIMALS) -> int:
    """Decimals that show two significant digits of ``half_width`` (0 to ``most``).

    A zero half-width (every resample agrees) gets ``most`` decimals.
    """
    if not half_width > 0 or not math.isfinite(half_width):
        return most
    return max(0, min(most, 1 - math.floor(math.log10(half_width))))


def format_interval(value: float, lo: float, hi: float, fmt: str = "{:.3f}") -> str:
    """``value ± half-width``, rounded to what the interval supports; ``fmt`` without one.

    Args:
        value: the point estimate.
        lo: lower bound of its interval (NaN: none).
        hi: upper bound of its interval (NaN: none).
        fmt: the column's format, used when there is no interval; a ``+`` in it keeps the sign
            of the figure shown with an interval too.

    Returns:
        The text; ``"—"`` for a missing figure.
    """
    if is_missing(value):
        return "—"
    if is_missing(lo) or is_missing(hi):
        return fmt.format(value)
    half = (float(hi) - float(lo)) / 2.0
    d = decimals(half)
    sign = "+" if "+" in fmt else ""
    return f"{float(value):{sign}.{d}f} ± {half:.{d}f}"


def best_position(
    values: Sequence[float],
    los: Sequence[float],
    his: Sequence[float],
    higher_is_better: bool,
) -> int | None:
    """The position of the figure to mark best, or None.

    The best figure is marked only when there is a runner-up, both have an interval, the two
    figures differ and the intervals do not overlap.
    """
    present = [i for i, v in enumerate(values) if not is_missing(v)]
    if len(present) < 2:
        return None
    ranked = sorted(present, key=lambda i: float(values[i]), reverse=higher_is_better)
    best, second = ranked[0], ranked[1]
    if float(values[best]) == float(values[second]):
        return None
    if any(is_missing(x) for x in (los[best], his[best], los[second], his[second])):
        return None
    if higher_is_better:
        clear = float(los[best]) > float(his[second])
    else:
        clear = float(his[best]) < float(los[second])
    return best if clear else None
