"""Bootstrap resamples for the report: many configurations at once, and task-accuracy intervals.

:func:`sparsebench.bench.stats.macro_interval` resamples one configuration's ``(layers,
sequences)`` values. A leaderboard has thousands of configurations that must share the same
resamples, so :func:`macro_resamples` computes the same statistic for a stack of them in one
matrix product: a resample's mean over sequences is ``Σ count_j · v_j / Σ count_j`` over the
sequences ``j`` it draws (``count_j`` times each), missing values left out of both sums. The
figures equal ``macro_interval``'s with the same indices (tests check it); the per-resample
statistics it returns also give paired differences (the same sequences for both sides).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import stats

__all__ = [
    "accuracy_intervals",
    "bounds",
    "macro_resamples",
    "per_sequence_matrix",
    "plot_run",
    "records_by_config",
    "resample_counts",
    "widest",
    "window_figures",
    "with_accuracy_intervals",
]


#: The columns that name a configuration.
KEYS = ["dataset", "method", "method_id"]


def records_by_config(
    records: pd.DataFrame,
    fields: tuple[str, ...] = ("layer", "per_sequence", "sequence_lengths", "by_length"),
) -> dict[tuple, list[dict]]:
    """Each configuration's records (only ``fields``, where present) as dicts, ordered by layer.

    Keyed by ``(dataset, method, method_id)``.
    """
    if records.empty or any(k not in records for k in KEYS):
        return {}
    cols = [c for c in fields if c in records]
    keys = zip(*(records[k].tolist() for k in KEYS), strict=True)
    values = zip(*(records[c].tolist() for c in cols), strict=True) if cols else iter(())
    groups: dict[tuple, list[dict]] = {}
    for key, vals in zip(keys, values, strict=False):
        groups.setdefault(tuple(key), []).append(dict(zip(cols, vals, strict=True)))
    if "layer" in cols:
        for recs in groups.values():
            recs.sort(key=lambda r: r["layer"])
    return groups


def resample_counts(index: np.ndarray, n: int) -> np.ndarray:
    """``(reps, n)`` how many times each item is drawn in each resample of ``index``."""
    reps = index.shape[0]
    counts = np.zeros((reps, n))
    np.add.at(counts, (np.repeat(np.arange(reps), index.shape[1]), index.ravel()), 1.0)
    return counts


def macro_resamples(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per resample, the mean over layers of each layer's mean over the drawn sequences.

    Args:
        values: ``(configs, layers, sequences)``; NaN where a sequence has no value.
        counts: :func:`resample_counts` of the shared resample indices.

    Returns:
        ``(configs, reps)`` statistics; NaN where a resample has no value at all.
    """
    values = np.asarray(values, dtype=float)
    valid = np.isfinite(values)
    filled = np.where(valid, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        layer_means = (filled @ counts.T) / (valid.astype(float) @ counts.T)  # (K, L, reps)
        present = np.isfinite(layer_means)
        total = np.where(present, layer_means, 0.0).sum(axis=1)
        return total / present.sum(axis=1)


def bounds(samples: np.ndarray, level: float = stats.LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds along the last axis, finite resamples only (NaN when there are none)."""
    samples = np.atleast_2d(np.asarray(samples, dtype=float))
    tail = (1.0 - level) / 2.0
    lo = np.full(samples.shape[0], np.nan)
    hi = np.full(samples.shape[0], np.nan)
    for i, row in enumerate(samples):
        row = row[np.isfinite(row)]
        if row.size:
            lo[i], hi[i] = np.quantile(row, [tail, 1.0 - tail])
    return lo, hi


def per_sequence_matrix(records: Sequence[dict], metric: str) -> np.ndarray | None:
    """``(layers, sequences)`` values of ``metric`` from a configuration's per-layer records.

    ``records`` are ordered by layer. ``None`` when a record has no ``per_sequence`` values for
    the metric or the layers disagree on the number of sequences (nothing to resample).
    """
    rows = []
    for r in records:
        per = r.get("per_sequence")
        if not isinstance(per, dict) or not isinstance(per.get(metric), list):
            return None
        rows.append([np.nan if v is None else float(v) for v in per[metric]])
    if not rows or len({len(x) for x in rows}) != 1 or not rows[0]:
        return None
    return np.asarray(rows, dtype=float)


def window_figures(record: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """``(numerators, denominators)`` per window: correct over tokens, or cosine over ones."""
    per = record.get("per_window")
    if not isinstance(per, dict):
        return None
    if isinstance(per.get("correct"), list) and isinstance(per.get("tokens"), list):
        num = np.asarray(per["correct"], dtype=float)
        den = np.asarray(per["tokens"], dtype=float)
    elif isinstance(per.get("cosine"), list):
        num = np.asarray(per["cosine"], dtype=float)
        den = np.ones_like(num)
    else:
        return None
    if num.size == 0 or num.shape != den.shape:
        return None
    return num, den


def accuracy_intervals(
    acc: list[dict], reference: str = "gold", *, reps: int = stats.REPS, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Intervals of each accuracy record's figure and of its difference from the reference.

    Args:
        acc: accuracy records of one dataset and one run of windows (one per configuration).
        reference: the method id of the full-attention row the differences are taken against.
        reps: bootstrap resamples.
        seed: their seed (the same draws for every configuration).

    Returns:
        ``{method_id: {"accuracy_lo", "accuracy_hi", "delta_accuracy_lo", "delta_accuracy_hi",
        "tokens"}}``: accuracy resampled over windows (:func:`stats.ratio_interval`), the
        difference paired on the same windows (:func:`stats.paired_ratio_delta_interval`, only
        when both records hold the same windows), and how many tokens the figure rests on. NaN
        where the records hold no windows.
    """
    nan = float("nan")
    ref = next((r for r in acc if r.get("method_id") == reference), None)
    ref_windows = window_figures(ref) if ref is not None else None
    out: dict[str, dict[str, float]] = {}
    for r in acc:
        row = dict.fromkeys(
            ("accuracy_lo", "accuracy_hi", "delta_accuracy_lo", "delta_accuracy_hi"), nan
        )
        windows = window_figures(r)
        row["tokens"] = _tokens(r, windows)
        if windows is not None:
            num, den = windows
            row["accuracy_lo"], row["accuracy_hi"] = stats.ratio_interval(
                num, den, reps=reps, seed=seed
            )
            if (
                ref_windows is not None
                and r.get("method_id") != reference
                and ref_windows[1].shape == den.shape
                and np.array_equal(ref_windows[1], den)
            ):
                delta = stats.paired_ratio_delta_interval(
                    num, ref_windows[0], den, reps=reps, seed=seed
                )
                row["delta_accuracy_lo"], row["delta_accuracy_hi"] = delta
        out[str(r.get("method_id"))] = row
    return out


def with_accuracy_intervals(acc: pd.DataFrame | None, reference: str = "gold"):
    """Accuracy records with :func:`accuracy_intervals`' columns added (None stays None).

    Records of different runs of windows (``split``) get their intervals separately, each
    difference paired with the reference row of its own run.
    """
    if acc is None or acc.empty:
        return acc
    out = acc.copy()
    runs = out["split"].fillna("") if "split" in out else pd.Series("", index=out.index)
    cols = ("accuracy_lo", "accuracy_hi", "delta_accuracy_lo", "delta_accuracy_hi", "tokens")
    for col in cols:
        out[col] = np.nan
    for _, part in out.groupby(runs, sort=False):
        extra = accuracy_intervals(part.to_dict("records"), reference)
        for col in cols:
            out.loc[part.index, col] = [extra[str(m)][col] for m in part["method_id"]]
    return out


def widest(acc: pd.DataFrame | None) -> pd.DataFrame | None:
    """One accuracy record per configuration: the one over the most tokens (then windows).

    A configuration scored both on a subset of the held-out windows and on all of them is
    reported on all of them. Needs the ``tokens`` column of :func:`with_accuracy_intervals`
    where known.
    """
    if acc is None or acc.empty or "method_id" not in acc:
        return acc
    size = [c for c in ("tokens", "windows") if c in acc]
    ranked = acc.sort_values(size, kind="stable", na_position="first") if size else acc
    return ranked.drop_duplicates("method_id", keep="last").sort_index()


def plot_run(acc: pd.DataFrame | None) -> pd.DataFrame | None:
    """The records of one run of held-out windows: the run with the most configurations.

    Accuracies over different windows are not comparable point to point, so a plot draws one
    run (the most windows among runs of equal size).
    """
    if acc is None or acc.empty or "split" not in acc or acc["split"].nunique() < 2:
        return acc
    w = acc["windows"] if "windows" in acc else pd.Series(0, index=acc.index)
    size = acc.assign(_w=w).groupby("split").agg(n=("method_id", "nunique"), w=("_w", "max"))
    return acc[acc["split"] == size.sort_values(["n", "w"]).index[-1]]


def _tokens(record: dict, windows: tuple[np.ndarray, np.ndarray] | None) -> float:
    """How many scored tokens a record's figure rests on (NaN when it does not say)."""
    for key in ("num_tokens", "tokens"):
        v = record.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v):
            return float(v)
    per = record.get("per_window")
    if windows is not None and isinstance(per, dict) and isinstance(per.get("tokens"), list):
        return float(windows[1].sum())
    return float("nan")
