"""Graph quality per sequence-length bin: each method's chosen configuration, with intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stats
from .intervals import per_sequence_matrix, records_by_config

__all__ = ["LENGTH_BIN", "by_length_table", "length_bins"]

#: Width in tokens of the sequence-length bins.
LENGTH_BIN = 128


def length_bins(lengths, width: int = LENGTH_BIN, upper: bool = True) -> list[str]:
    """The fixed length bin of each sequence.

    Args:
        lengths: sequence lengths in tokens.
        width: bin width.
        upper: whether a bin holds its upper edge: ``"0-128"`` holds lengths 1 to 128 (True)
            or 0 to 127 (False).
    """
    out = []
    for n in lengths:
        k = (max(int(n) - 1, 0) if upper else int(n)) // width
        out.append(f"{k * width}-{(k + 1) * width}")
    return out


def _labels(lengths: list, record: dict) -> np.ndarray:
    """Each sequence's bin, by the edge rule that reproduces the record's ``by_length`` counts.

    Records that carry ``by_length`` name the sequences of each bin by count; where a length
    falls on an edge the rule that matches those counts is used (by default a bin holds its
    upper edge).
    """
    table = record.get("by_length")
    for upper in (True, False):
        labels = length_bins(lengths, upper=upper)
        if not isinstance(table, dict):
            break
        counts = {b: labels.count(b) for b in set(labels)}
        if all(
            isinstance(v, dict) and v.get("num_sequences", 0) == counts.get(k, 0)
            for k, v in table.items()
        ):
            return np.asarray(labels)
    return np.asarray(length_bins(lengths))


def _bin_start(label: str) -> int:
    return int(str(label).split("-")[0])


def by_length_table(
    records: pd.DataFrame,
    configs,
    *,
    reps: int = stats.REPS,
    seed: int = 0,
    level: float = stats.LEVEL,
) -> pd.DataFrame:
    """Recall and sparsity of chosen configurations per sequence-length bin, with intervals.

    Args:
        records: one dataset's sweep records.
        configs: the configuration of each method, ``{method: method_id}``, or a
            :func:`summarize` frame (its ``config@0.95`` column: each method's recall-0.95
            configuration; methods that reach no 0.95 are left out).
        reps: bootstrap resamples.
        seed: seed of the resamples.
        level: coverage of the intervals.

    Returns:
        Columns ``method, method_id, bin, num_sequences, recall, recall_lo, recall_hi,
        sparsity, sparsity_lo, sparsity_hi``: bins of :data:`LENGTH_BIN` tokens
        (:func:`length_bins`), each figure the paper's aggregation over the bin's sequences
        (mean over sequences per layer, then over layers) with its interval resampled over those
        sequences. From ``per_sequence`` and ``sequence_lengths``; records with only
        ``by_length`` give the figures without intervals.
    """
    cols = ["method", "method_id", "bin", "num_sequences"]
    cols += [f"{m}{s}" for m in ("recall", "sparsity") for s in ("", "_lo", "_hi")]
    if isinstance(configs, pd.DataFrame):
        col = f"config@{0.95:.2f}"
        configs = {r["method"]: r[col] for _, r in configs.iterrows() if r.get(col)}
    groups = {key[2]: recs for key, recs in records_by_config(records).items()}
    rows = []
    for method, method_id in configs.items():
        recs = groups.get(method_id)
        if recs:
            rows += _length_rows(method, method_id, recs, reps, seed, level)
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df
    df["_start"] = df["bin"].map(_bin_start)
    df = df.sort_values(["method", "_start"], kind="stable").drop(columns="_start")
    return df.reset_index(drop=True)


def _length_rows(method, method_id, recs, reps, seed, level) -> list[dict]:
    """:func:`by_length_table`'s rows of one configuration."""
    lengths = recs[0].get("sequence_lengths")
    mats = {m: per_sequence_matrix(recs, m) for m in ("recall", "sparsity")}
    if isinstance(lengths, list) and all(
        x is not None and x.shape[1] == len(lengths) for x in mats.values()
    ):
        labels = _labels(lengths, recs[0])
        rows = []
        for label in sorted(set(labels), key=_bin_start):
            keep = labels == label
            row = {"method": method, "method_id": method_id, "bin": label}
            row["num_sequences"] = int(keep.sum())
            index = stats.bootstrap_indices(int(keep.sum()), reps=reps, seed=seed)
            for m, mat in mats.items():
                part = mat[:, keep]
                with np.errstate(invalid="ignore"):
                    present = np.isfinite(part).any(axis=1)
                    per_layer = np.nansum(part, axis=1)[present] / np.isfinite(part).sum(1)[present]
                row[m] = float(per_layer.mean()) if per_layer.size else np.nan
                row[f"{m}_lo"], row[f"{m}_hi"] = stats.macro_interval(
                    part, index=index, level=level
                )
            rows.append(row)
        return rows
    return _length_rows_without_intervals(method, method_id, recs)


def _length_rows_without_intervals(method, method_id, recs) -> list[dict]:
    """Rows from the records' ``by_length`` figures alone (mean over layers, no interval)."""
    tables = [r.get("by_length") for r in recs]
    if not all(isinstance(t, dict) for t in tables):
        return []
    rows = []
    for label in sorted(set().union(*tables), key=_bin_start):
        cells = [t[label] for t in tables if isinstance(t.get(label), dict)]
        row = {"method": method, "method_id": method_id, "bin": label}
        row["num_sequences"] = int(cells[0].get("num_sequences", 0)) if cells else 0
        for m in ("recall", "sparsity"):
            vals = [c[m] for c in cells if isinstance(c.get(m), int | float)]
            row[m] = float(np.mean(vals)) if vals else np.nan
            row[f"{m}_lo"] = row[f"{m}_hi"] = np.nan
        rows.append(row)
    return rows
