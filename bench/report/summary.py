"""Summaries of sweep records: layer averages, Pareto frontiers and summary figures.

A record is one (dataset, method configuration, layer) with its metrics. Configurations are
compared on layer-averaged figures, as the paper does. The frontier of a method is the set of
its configurations that no other configuration of the same method beats on both recall and
sparsity. Summary figures read the frontier:

* ``sparsity@0.90`` (``@0.95``, ``@0.99``): the highest sparsity of a configuration whose recall
  is at least 0.90, with that configuration;
* ``auc``: the area under the frontier's step curve ``R(s)`` = the best recall among
  configurations of sparsity at least ``s``, for ``s`` from 0 to 1 (a configuration with recall
  1 at sparsity ``s`` alone gives an area of ``s``).

:func:`with_intervals` adds each configuration's bootstrap interval over evaluation sequences
(from the records' ``per_sequence`` values); :func:`by_length_table` (from :mod:`.lengths`)
gives figures per sequence-length bin.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import stats
from ..breakdown import PER_SEQUENCE
from ..metrics import METRICS
from .intervals import (
    bounds,
    macro_resamples,
    per_sequence_matrix,
    records_by_config,
    resample_counts,
)
from .lengths import LENGTH_BIN, by_length_table, length_bins

__all__ = [
    "INTERVAL_METRICS",
    "LENGTH_BIN",
    "THRESHOLDS",
    "Identity",
    "by_length_table",
    "identity_columns",
    "layer_average",
    "length_bins",
    "load_records",
    "newest_identity",
    "pareto_frontier",
    "summarize",
    "with_intervals",
]

THRESHOLDS = (0.90, 0.95, 0.99)
#: The graph metrics that get a bootstrap interval (``<m>_lo``, ``<m>_hi``).
INTERVAL_METRICS = tuple(m for m in PER_SEQUENCE if m != "gold_sparsity")
_KEYS = ["dataset", "method", "method_id"]


def load_records(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Records of JSON-lines files (or every ``*.jsonl`` under a directory) as a DataFrame.

    Torn last lines (a killed writer) are skipped. Parameters become ``param.<name>`` columns.
    """
    from ..runs import read_records

    if isinstance(paths, str | os.PathLike):
        p = Path(paths)
        files = sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
    else:
        files = [Path(x) for x in paths]
    rows = []
    for f in files:
        for rec in read_records(f):
            flat = {k: v for k, v in rec.items() if k not in ("params", "per_head")}
            for k, v in (rec.get("params") or {}).items():
                flat[f"param.{k}"] = json.dumps(v) if isinstance(v, list | dict) else v
            rows.append(flat)
    return pd.DataFrame(rows)


class Identity(NamedTuple):
    """Which records a table comes from: one dataset build and one sparsebench version.

    Attributes:
        dataset_hash: the dataset's content hash, ``"unknown"`` for records written before
            datasets were hashed.
        version: the sparsebench version of the records.
        left_out: how many records of other builds or versions were left out.
    """

    dataset_hash: str
    version: str
    left_out: int

    def describe(self) -> str:
        """One sentence for a table's header."""
        build = (
            "an unknown dataset build (records written before builds were hashed)"
            if self.dataset_hash == "unknown"
            else f"dataset build {self.dataset_hash}"
        )
        text = f"From {build}, sparsebench {self.version}."
        if self.left_out:
            text += f" Left out {self.left_out} records of other dataset builds or versions."
        return text


def identity_columns(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each record's dataset hash and sparsebench version as text, ``"unknown"`` where missing."""

    def col(name: str) -> pd.Series:
        if name not in df:
            return pd.Series("unknown", index=df.index)
        c = df[name].astype(object)
        return c.where(c.notna(), "unknown").astype(str)

    return col("dataset_hash"), col("sparsebench")


def newest_identity(df: pd.DataFrame) -> tuple[pd.DataFrame, Identity]:
    """The records of one dataset that share the identity of its newest record.

    Records of different dataset builds (content hashes) or sparsebench versions are never
    merged: the identity of the newest record (by ``date``; the last one when no date reads)
    is kept and the others are counted. A missing ``dataset_hash`` or version is the identity
    ``"unknown"``.
    """
    if df.empty:
        return df, Identity("unknown", "unknown", 0)
    hashes, versions = identity_columns(df)
    dates = (
        pd.to_datetime(df["date"], errors="coerce", utc=True, format="mixed")
        if "date" in df
        else pd.Series(pd.NaT, index=df.index)
    )
    newest = dates.idxmax() if dates.notna().any() else df.index[-1]
    keep = (hashes == hashes[newest]) & (versions == versions[newest])
    ident = Identity(hashes[newest], versions[newest], int((~keep).sum()))
    return df[keep].reset_index(drop=True), ident


def layer_average(df: pd.DataFrame, complete: bool = True) -> pd.DataFrame:
    """One row per (dataset, method configuration): metrics averaged over its layers.

    The averaged metrics are the per-layer ones of :data:`~sparsebench.bench.metrics.METRICS`
    and ``output_error``.

    With ``complete`` a configuration counts only when it has as many layers as the most
    complete configuration of its dataset (a sweep still in progress is not half-averaged).
    """
    if df.empty:
        return df
    metrics = [name for name, m in METRICS.items() if m.per_layer and name in df.columns]
    if "output_error" in df.columns and "output_error" not in metrics:
        metrics.append("output_error")
    keep = [c for c in df.columns if c.startswith("param.")]
    agg = {c: "mean" for c in metrics}
    agg.update({c: "first" for c in keep})
    agg["layer"] = "nunique"
    out = df.groupby(_KEYS, sort=False, dropna=False).agg(agg).reset_index()
    out = out.rename(columns={"layer": "num_layers"})
    if complete:
        most = out.groupby("dataset")["num_layers"].transform("max")
        out = out[out["num_layers"] == most].reset_index(drop=True)
    return out


def pareto_frontier(df: pd.DataFrame, x: str = "sparsity", y: str = "recall") -> pd.DataFrame:
    """Configurations not beaten on both ``x`` and ``y`` by another one of the same method.

    Expects layer-averaged rows. Returns them sorted by method, then ``x`` ascending. Of
    configurations with identical figures the first is kept.
    """
    if df.empty:
        return df
    keep = []
    for _, group in df.groupby(["dataset", "method"], sort=False):
        g = group.sort_values([x, y], ascending=[False, False], kind="stable")
        best = float("-inf")
        for idx, row in g.iterrows():
            if row[y] > best:
                keep.append(idx)
                best = row[y]
    front = df.loc[keep]
    return front.sort_values(["dataset", "method", x], kind="stable").reset_index(drop=True)


def _auc(front: pd.DataFrame, x: str, y: str) -> float:
    """Area under s -> max{y : x >= s} for s in [0, 1]."""
    pts = front.sort_values(x)[[x, y]].to_numpy()
    area, prev = 0.0, 0.0
    # For s in (prev, x_i], the best recall available is the max over points with x >= x_i.
    for i, (xi, _) in enumerate(pts):
        best = max(p[1] for p in pts[i:])
        area += (min(xi, 1.0) - prev) * best
        prev = min(xi, 1.0)
    return area


def summarize(df: pd.DataFrame, thresholds: Iterable[float] = THRESHOLDS) -> pd.DataFrame:
    """Summary figures per (dataset, method) from layer-averaged rows.

    Columns: ``sparsity@t`` and ``config@t`` for each threshold ``t`` (NaN / empty when no
    configuration reaches it), ``auc``, the number of configurations, and the best recall.
    """
    rows = []
    front = pareto_frontier(df)
    for (dataset, method), g in df.groupby(["dataset", "method"], sort=False):
        f = front[(front["dataset"] == dataset) & (front["method"] == method)]
        row = {
            "dataset": dataset,
            "method": method,
            "configs": len(g),
            "best_recall": float(g["recall"].max()),
            "auc": _auc(f, "sparsity", "recall"),
        }
        for t in thresholds:
            ok = f[f["recall"] >= t]
            if ok.empty:
                row[f"sparsity@{t:.2f}"] = float("nan")
                row[f"config@{t:.2f}"] = ""
            else:
                best = ok.loc[ok["sparsity"].idxmax()]
                row[f"sparsity@{t:.2f}"] = float(best["sparsity"])
                row[f"config@{t:.2f}"] = best["method_id"]
        rows.append(row)
    return pd.DataFrame(rows)


def with_intervals(
    avg: pd.DataFrame,
    records: pd.DataFrame,
    *,
    reps: int = stats.REPS,
    seed: int = 0,
    level: float = stats.LEVEL,
) -> pd.DataFrame:
    """The layer averages with a bootstrap interval for each metric of :data:`INTERVAL_METRICS`.

    Adds ``<m>_lo`` and ``<m>_hi``: the percentile interval of the configuration's figure when
    the evaluation sequences are resampled (a sequence keeps all its layers and heads together),
    from its records' ``per_sequence`` values. Every configuration of a dataset is scored on the
    same resamples (one set of indices per dataset), as :func:`stats.macro_interval` with a
    shared ``index`` would score them. NaN where the records hold no ``per_sequence`` values
    (records written before intervals existed): never an interval made up.

    Args:
        avg: :func:`layer_average` rows.
        records: the records they were averaged from.
        reps: bootstrap resamples.
        seed: seed of the resamples.
        level: coverage of the intervals.
    """
    out = avg.copy()
    for m in INTERVAL_METRICS:
        out[f"{m}_lo"] = np.nan
        out[f"{m}_hi"] = np.nan
    if out.empty or records.empty or "per_sequence" not in records:
        return out
    groups = records_by_config(records)
    counts: dict[tuple, np.ndarray] = {}
    for dataset, rows in out.groupby("dataset", sort=False, dropna=False):
        for m in INTERVAL_METRICS:
            stacks: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
            for i, row in rows.iterrows():
                recs = groups.get((dataset, row["method"], row["method_id"]), [])
                mat = per_sequence_matrix(recs, m)
                if mat is not None:
                    stacks.setdefault(mat.shape, []).append((i, mat))
            for (_, n), items in stacks.items():
                if (dataset, n) not in counts:
                    index = stats.bootstrap_indices(n, reps=reps, seed=seed)
                    counts[(dataset, n)] = resample_counts(index, n)
                samples = macro_resamples(np.stack([x for _, x in items]), counts[(dataset, n)])
                lo, hi = bounds(samples, level)
                where = [i for i, _ in items]
                out.loc[where, f"{m}_lo"] = lo
                out.loc[where, f"{m}_hi"] = hi
    return out
