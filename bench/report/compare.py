"""Two runs side by side: per method, how sparsity at recall 0.95, accuracy and time moved.

Runs are comparable only on the same dataset build (content hash): then both scored the same
evaluation sequences and the same held-out windows, and each difference gets a **paired**
bootstrap interval: every resample draws the same sequences (or windows) for both runs, so the
spread the two runs share cancels out. A difference is flagged when its 95% interval excludes
0. Sparsity at recall 0.95 compares each run's own recall-0.95 configuration (the interval
holds those two configurations fixed). Time × dense has no interval (speed records keep
medians), so it is shown and never flagged.
"""

from __future__ import annotations

import math
import os
import textwrap
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from .. import stats
from .assemble import DatasetReport, load_reports
from .formatting import format_interval
from .intervals import (
    bounds,
    macro_resamples,
    per_sequence_matrix,
    records_by_config,
    resample_counts,
    widest,
    window_figures,
)

__all__ = ["COMPARE_COLUMNS", "compare_runs", "format_comparison"]

#: The columns of :func:`compare_runs`' frame.
COMPARE_COLUMNS = [
    "dataset",
    "dataset_hash",
    "method",
    "config_a",
    "config_b",
    "sparsity_a",
    "sparsity_b",
    "sparsity_delta",
    "sparsity_delta_lo",
    "sparsity_delta_hi",
    "accuracy_a",
    "accuracy_b",
    "accuracy_delta",
    "accuracy_delta_lo",
    "accuracy_delta_hi",
    "x_dense_a",
    "x_dense_b",
    "x_dense_delta",
    "flag",
]


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def compare_runs(
    run_a: str | os.PathLike,
    run_b: str | os.PathLike,
    *,
    reps: int = stats.REPS,
    seed: int = 0,
    level: float = stats.LEVEL,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Per dataset and method, run B minus run A, with paired intervals.

    Args:
        run_a: a run folder (or results folder), the baseline.
        run_b: the run compared with it.
        reps: bootstrap resamples.
        seed: their seed.
        level: coverage of the intervals.
        log: where warnings of reading the folders go.

    Returns:
        One row per method present in both runs of each dataset they share, with the columns
        of :data:`COMPARE_COLUMNS`: each side's recall-0.95 configuration and sparsity, the
        difference and its paired interval; the same for task accuracy at those configurations
        (paired over windows when both runs hold the same windows); time × best dense kernel;
        ``flag`` when a difference's interval excludes 0. ``attrs["only_a"]`` and
        ``attrs["only_b"]`` list datasets found in one run only.

    Raises:
        ValueError: when a dataset shared by both runs is of different builds (naming both
            hashes), or the runs share no dataset.
    """
    log = log or _warn
    reps_a = {r.dataset: r for r in load_reports(run_a, log)[0]}
    reps_b = {r.dataset: r for r in load_reports(run_b, log)[0]}
    shared = sorted(set(reps_a) & set(reps_b))
    if not shared:
        raise ValueError(
            f"{run_a} ({', '.join(sorted(reps_a))}) and {run_b} ({', '.join(sorted(reps_b))}) "
            "share no dataset; compare runs of the same dataset"
        )
    for d in shared:
        ha, hb = reps_a[d].identity.dataset_hash, reps_b[d].identity.dataset_hash
        if ha != hb:
            raise ValueError(
                f"{d}: {run_a} is of dataset build {ha}, {run_b} of build {hb}; compare runs "
                "of the same dataset build"
            )
    rows = []
    for d in shared:
        rows += _dataset_rows(reps_a[d], reps_b[d], reps, seed, level)
    out = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    out.attrs["only_a"] = sorted(set(reps_a) - set(reps_b))
    out.attrs["only_b"] = sorted(set(reps_b) - set(reps_a))
    return out


def _dataset_rows(a: DatasetReport, b: DatasetReport, reps, seed, level) -> list[dict]:
    """:func:`compare_runs`' rows of one dataset."""
    recs_a = {k[2]: v for k, v in records_by_config(a.records).items()}
    recs_b = {k[2]: v for k, v in records_by_config(b.records).items()}
    sum_a = a.summary.set_index("method")
    sum_b = b.summary.set_index("method")
    tab_a = a.table.set_index("method")
    tab_b = b.table.set_index("method")
    rows = []
    for method in [m for m in sum_a.index if m in sum_b.index]:
        ca, cb = sum_a.at[method, "config@0.95"], sum_b.at[method, "config@0.95"]
        row = {"dataset": a.dataset, "dataset_hash": a.identity.dataset_hash, "method": method}
        row |= {"config_a": ca, "config_b": cb}
        row |= _sparsity(
            float(sum_a.at[method, "sparsity@0.95"]),
            float(sum_b.at[method, "sparsity@0.95"]),
            recs_a.get(ca, []),
            recs_b.get(cb, []),
            reps,
            seed,
            level,
        )
        row |= _accuracy(_acc_record(a, ca), _acc_record(b, cb), reps, seed, level)
        xa, xb = _speed(tab_a, method), _speed(tab_b, method)
        row |= {"x_dense_a": xa, "x_dense_b": xb, "x_dense_delta": xb - xa}
        row["flag"] = any(
            _excludes_zero(row[f"{m}_delta_lo"], row[f"{m}_delta_hi"])
            for m in ("sparsity", "accuracy")
        )
        rows.append(row)
    return rows


def _excludes_zero(lo: float, hi: float) -> bool:
    return bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))


def _sparsity(sa, sb, recs_a, recs_b, reps, seed, level) -> dict[str, float]:
    """Both sparsities, their difference and its interval over the same sequences."""
    out = {"sparsity_a": sa, "sparsity_b": sb, "sparsity_delta": sb - sa}
    out |= {"sparsity_delta_lo": math.nan, "sparsity_delta_hi": math.nan}
    ma = per_sequence_matrix(recs_a, "sparsity") if recs_a else None
    mb = per_sequence_matrix(recs_b, "sparsity") if recs_b else None
    if ma is None or mb is None or ma.shape != mb.shape:
        return out
    la, lb = recs_a[0].get("sequence_lengths"), recs_b[0].get("sequence_lengths")
    if isinstance(la, list) and isinstance(lb, list) and la != lb:
        return out  # not the same sequences: no pairing
    n = ma.shape[1]
    counts = resample_counts(stats.bootstrap_indices(n, reps=reps, seed=seed), n)
    samples = macro_resamples(np.stack([ma, mb]), counts)
    lo, hi = bounds(samples[1] - samples[0], level)
    out["sparsity_delta_lo"], out["sparsity_delta_hi"] = float(lo[0]), float(hi[0])
    return out


def _acc_record(rep: DatasetReport, method_id: str) -> dict | None:
    """The accuracy record of a configuration in a report (its widest run), or None."""
    acc = rep.accuracy
    if not method_id or acc is None or acc.empty:
        return None
    hit = widest(acc[acc["method_id"] == method_id])
    return hit.iloc[0].to_dict() if len(hit) else None


def _accuracy(ra, rb, reps, seed, level) -> dict[str, float]:
    """Both accuracies, their difference and its interval paired over the same windows."""

    def value(r) -> float:
        try:
            return float(r.get("accuracy", math.nan)) if r is not None else math.nan
        except (TypeError, ValueError):
            return math.nan

    aa, ab = value(ra), value(rb)
    out = {"accuracy_a": aa, "accuracy_b": ab, "accuracy_delta": ab - aa}
    out |= {"accuracy_delta_lo": math.nan, "accuracy_delta_hi": math.nan}
    wa = window_figures(ra) if ra is not None else None
    wb = window_figures(rb) if rb is not None else None
    if wa is None or wb is None or wa[1].shape != wb[1].shape or not np.array_equal(wa[1], wb[1]):
        return out
    lo, hi = stats.paired_ratio_delta_interval(
        wb[0], wa[0], wa[1], reps=reps, seed=seed, level=level
    )
    out["accuracy_delta_lo"], out["accuracy_delta_hi"] = lo, hi
    return out


def _speed(table: pd.DataFrame, method: str) -> float:
    try:
        return float(table.at[method, "speed_x_dense"])
    except (KeyError, TypeError, ValueError):
        return math.nan


def _texts(g: pd.DataFrame, key: str, fmt: str) -> list[str]:
    """A column's cells, with the interval of ``key_lo``/``key_hi`` where the frame has one."""
    nan = pd.Series(math.nan, index=g.index)
    lo, hi = g.get(f"{key}_lo", nan), g.get(f"{key}_hi", nan)
    return [format_interval(*x, fmt) for x in zip(g[key], lo, hi, strict=True)]


def format_comparison(df: pd.DataFrame, width: int = 100) -> str:
    """A narrow text table of :func:`compare_runs`' frame, one block per dataset.

    Each difference is run B minus run A with ``±`` the half-width of its paired 95% interval;
    ``*`` flags a difference whose interval excludes 0.
    """
    lines = textwrap.wrap(
        "B − A per method: sparsity at recall 0.95 (each run's own configuration), accuracy "
        "at those configurations, time × best dense kernel. ± : half-width of the paired 95% "
        "bootstrap interval; * : an interval excludes 0.",
        width,
    )
    for dataset, g in df.groupby("dataset", sort=True):
        view = pd.DataFrame(
            {
                "method": [str(m)[:24] for m in g["method"]],
                "spars A": _texts(g, "sparsity_a", "{:.3f}"),
                "spars B": _texts(g, "sparsity_b", "{:.3f}"),
                "Δ sparsity": _texts(g, "sparsity_delta", "{:+.3f}"),
                "Δ accuracy": _texts(g, "accuracy_delta", "{:+.4f}"),
                "Δ ×dense": _texts(g, "x_dense_delta", "{:+.2f}"),
                "": ["*" if f else "" for f in g["flag"]],
            }
        )
        lines += ["", f"{dataset} (dataset build {g['dataset_hash'].iloc[0]})"]
        lines.append(view.to_string(index=False, line_width=width))
    for side in ("a", "b"):
        only = df.attrs.get(f"only_{side}") or []
        if only:
            lines += ["", *textwrap.wrap(f"Only in run {side.upper()}: {', '.join(only)}.", width)]
    return "\n".join(lines) + "\n"
