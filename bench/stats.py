"""Uncertainty of the published figures: percentile bootstrap confidence intervals.

Graph metrics are resampled over **sequences** (a sequence keeps all its heads and layers
together: one resample draws sequence indices once and applies them to every layer), task
figures over **evaluation windows**, and a difference against full attention by a **paired**
bootstrap (the same windows drawn for both). The point estimate is always the figure as the
paper aggregates it; the interval says how far it would move over other draws of the data.

Every function takes a ``seed`` so an interval is reproducible, and ``reps`` resamples (1000 by
default). Missing values (``NaN``: a sequence that does not count for that metric, e.g. an
empty prediction for precision) are left out of each resample's mean, as they are of the point
estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "LEVEL",
    "REPS",
    "bootstrap_indices",
    "macro_interval",
    "paired_ratio_delta_interval",
    "ratio_interval",
]

LEVEL = 0.95
REPS = 1000


def bootstrap_indices(n: int, *, reps: int = REPS, seed: int = 0) -> np.ndarray:
    """``(reps, n)`` indices drawn with replacement from ``range(n)``: the resamples."""
    if n < 1:
        raise ValueError(f"cannot resample {n} items; the bootstrap needs at least one")
    if reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps}")
    return np.random.default_rng(seed).integers(0, n, size=(reps, n))


def _given(index: np.ndarray, n: int) -> np.ndarray:
    """Resample indices given by the caller, checked: ``(reps, n)`` integers in ``range(n)``."""
    index = np.asarray(index)
    if index.ndim != 2 or index.shape[1] != n or index.shape[0] < 1:
        raise ValueError(f"index must have shape (reps, {n}), got {index.shape}")
    if not np.issubdtype(index.dtype, np.integer) or index.min() < 0 or index.max() >= n:
        raise ValueError(f"index must hold integers in 0 .. {n - 1}")
    return index


def _bounds(stats: np.ndarray, level: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [tail, 1.0 - tail])
    return (float(lo), float(hi))


def macro_interval(
    per_sequence: Sequence[Sequence[float | None]] | np.ndarray,
    *,
    reps: int = REPS,
    seed: int = 0,
    level: float = LEVEL,
    index: np.ndarray | None = None,
) -> tuple[float, float]:
    """Interval of the mean over layers of each layer's mean over sequences.

    Args:
        per_sequence: ``(layers, sequences)`` values of one configuration (one row per layer,
            the same sequences in the same order in every row); ``None``/``NaN`` entries are
            left out of their layer's mean.
        reps: number of resamples.
        seed: seed of the resamples (ignored when ``index`` is given).
        level: coverage of the interval.
        index: ``(reps, sequences)`` resample indices to use instead of drawing them, so that
            several figures (or configurations) share the same resamples.

    Returns:
        ``(lo, hi)`` percentile bounds; NaN when no resample has a value.
    """
    values = np.asarray(per_sequence, dtype=float)
    if values.ndim == 1:
        values = values[None, :]
    if index is None:
        index = bootstrap_indices(values.shape[1], reps=reps, seed=seed)
    index = _given(index, values.shape[1])
    drawn = values[:, index]  # (layers, reps, sequences)
    with np.errstate(invalid="ignore"), _quiet():
        stats = np.nanmean(np.nanmean(drawn, axis=2), axis=0)
    return _bounds(stats, level)


def ratio_interval(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    reps: int = REPS,
    seed: int = 0,
    level: float = LEVEL,
    index: np.ndarray | None = None,
) -> tuple[float, float]:
    """Interval of ``sum(numerators) / sum(denominators)`` resampled over windows.

    For task figures pooled over tokens: accuracy is correct tokens over tokens, mean loss is
    summed loss over tokens, each window one resampling unit. ``index`` (``(reps, windows)``)
    gives the resamples instead of drawing them from ``seed``.
    """
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.shape != den.shape:
        raise ValueError(f"numerators {num.shape} and denominators {den.shape} differ in shape")
    if index is None:
        index = bootstrap_indices(num.shape[0], reps=reps, seed=seed)
    index = _given(index, num.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = num[index].sum(1) / den[index].sum(1)
    return _bounds(stats, level)


def paired_ratio_delta_interval(
    numerators: Sequence[float],
    reference_numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    reps: int = REPS,
    seed: int = 0,
    level: float = LEVEL,
    index: np.ndarray | None = None,
) -> tuple[float, float]:
    """Paired interval of ``Σa/Σd − Σb/Σd``: a method against the reference on the same windows.

    Each resample draws windows once and scores both on them, so the window-to-window spread
    that both share cancels out of the difference. ``index`` (``(reps, windows)``) gives the
    resamples instead of drawing them from ``seed``.
    """
    a = np.asarray(numerators, dtype=float)
    b = np.asarray(reference_numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if not (a.shape == b.shape == den.shape):
        raise ValueError(
            f"paired figures need the same windows: got {a.shape}, {b.shape}, {den.shape}"
        )
    if index is None:
        index = bootstrap_indices(a.shape[0], reps=reps, seed=seed)
    index = _given(index, a.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        total = den[index].sum(1)
        stats = (a[index].sum(1) - b[index].sum(1)) / total
    return _bounds(stats, level)


class _quiet:
    """Silence numpy's "mean of empty slice" warnings (all-NaN rows give NaN, as wanted)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
