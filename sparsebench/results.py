"""Records as pandas DataFrames: load a results or run folder, frontiers, the leaderboard.

>>> from sparsebench import results
>>> df = results.load("results")              # or a run folder, or one records file
>>> df[df.kind == "graph"].groupby("method")["recall"].max()
>>> results.frontier(df)                       # recall–sparsity frontier per dataset and method
>>> results.leaderboard(df)                    # the table `sparsebench leaderboard` writes

A frame from :func:`load` has one row per record. ``kind`` says which: ``"graph"`` (a sweep's
graph quality, one row per configuration and layer), ``"accuracy"`` (task accuracy with the
predicted graph in the model, one row per configuration) or ``"speed"`` (one timed case).
Method parameters are ``param.<name>`` columns, timings of speed cases ``<stage>.<figure>``
columns (``end_to_end.median_s``); ``sparsebench`` holds the version that wrote the record and
``dataset_hash`` the dataset build. :func:`frontier` and :func:`leaderboard` compute with the
report's own functions (:mod:`sparsebench.bench.report`), so their figures are those of
``sparsebench leaderboard``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from sparsebench.bench.metrics import METRICS
from sparsebench.bench.report import (
    dataset_report,
    layer_average,
    load_records,
    pareto_frontier,
    speed_by_method,
    speed_table,
)
from sparsebench.bench.report.assemble import accuracy_records, graph_record_files
from sparsebench.bench.report.summary import Identity, newest_identity

__all__ = ["KINDS", "frontier", "leaderboard", "load"]

#: The kinds of records, in the order :func:`load` lists them.
KINDS = ("graph", "accuracy", "speed")
# Fields kept whole (lists and mappings the report reads), never split into columns.
_WHOLE = frozenset({"per_sequence", "per_window", "by_length", "sequence_lengths"})
_FIRST = ["kind", "dataset", "dataset_hash", "method", "method_id"]
_AFTER_PARAMS = ["layer", "split"]


def _files_of(path: Path) -> list[tuple[str, Path]]:
    """``(kind, records file)`` of a results folder, a run folder or a dataset's folder."""
    files = [("graph", f) for f in graph_record_files(path)]
    files += [("accuracy", f) for f in sorted(path.glob("*/accuracy.jsonl"))]
    speed = path / "speed" / "records.jsonl"
    if speed.exists():
        files.append(("speed", speed))
    if not files:  # a dataset's own folder: records.jsonl (or .gz) and accuracy.jsonl
        if any((path / n).exists() for n in ("records.jsonl", "records.jsonl.gz")):
            files.append(("speed" if path.name == "speed" else "graph", path / "records.jsonl"))
        if (path / "accuracy.jsonl").exists():
            files.append(("accuracy", path / "accuracy.jsonl"))
    return files


def _kind_of_file(path: Path) -> str:
    """The kind of records one file holds, from its name and folder."""
    if path.name.startswith("accuracy"):
        return "accuracy"
    return "speed" if path.parent.name == "speed" else "graph"


def _resolve(path_or_run: str | os.PathLike) -> list[tuple[str, Path]]:
    """The records files to read, with their kinds.

    Raises:
        ValueError: naming the path when it holds no records.
    """
    path = Path(path_or_run)
    if not path.exists() and not path.is_absolute() and (Path("runs") / path).exists():
        path = Path("runs") / path  # a run's folder name, as `sparsebench run` prints it
    if path.is_file():
        if path.name.endswith(".jsonl.gz"):  # packed records are read beside the plain file
            path = path.with_name(path.name[: -len(".gz")])
        return [(_kind_of_file(path), path)]
    files = _files_of(path) if path.is_dir() else []
    if not files:
        raise ValueError(
            f"no records at {path}: give a results folder, a run folder "
            "(runs/<stamp>-<command>) or a records file (records.jsonl, accuracy.jsonl)"
        )
    return files


def _flatten(df: pd.DataFrame) -> pd.DataFrame:
    """Mapping-valued columns (the timings of speed cases) as ``<column>.<field>`` columns."""
    for col in list(df.columns):
        if col in _WHOLE or df[col].dtype != object:
            continue
        values = df[col].dropna()
        if values.empty or not values.map(lambda v: isinstance(v, dict)).all():
            continue
        wide = pd.DataFrame(
            [v if isinstance(v, dict) else {} for v in df[col]], index=df.index
        ).add_prefix(f"{col}.")
        df = pd.concat([df.drop(columns=col), wide], axis=1)
    return df


def _nest(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`_flatten` undone: ``<column>.<field>`` columns back into one mapping column."""
    groups: dict[str, list[str]] = {}
    for col in df.columns:
        if "." in col and not col.startswith("param."):
            groups.setdefault(col.split(".", 1)[0], []).append(col)
    for name, cols in groups.items():
        fields = df[cols].rename(columns=lambda c: c.split(".", 1)[1])
        values = [None if r.isna().all() else r.dropna().to_dict() for _, r in fields.iterrows()]
        df = df.drop(columns=cols).assign(**{name: values})
    return df


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Identity first, then parameters, layer and split, metrics, the version, the rest."""
    params = sorted(c for c in df.columns if c.startswith("param."))
    metrics = [m for m in METRICS if m in df.columns]
    head = [c for c in _FIRST if c in df.columns] + params
    head += [c for c in _AFTER_PARAMS if c in df.columns] + metrics
    head += ["sparsebench"] if "sparsebench" in df.columns else []
    return df[head + [c for c in df.columns if c not in head]]


def load(path_or_run: str | os.PathLike) -> pd.DataFrame:
    """The records of a results folder, a run folder or one records file as a tidy DataFrame.

    One row per record, ``kind`` first (``"graph"``, ``"accuracy"``, ``"speed"``), then the
    dataset, its build (``dataset_hash``), ``method``, ``method_id``, the parameters as
    ``param.<name>`` columns, ``layer`` and ``split``, every metric, ``sparsebench`` (the version
    that wrote the record) and the provenance fields. Per-head arrays are left out;
    per-sequence and per-window figures stay as lists in their columns (intervals use them).
    Records packed beside a file (``records.jsonl.gz``) are read with it, and a reader's
    warnings (duplicated keys, unreadable lines) are passed on.

    Args:
        path_or_run: ``results/``, a run folder (``runs/<stamp>-<command>``, or its name when
            it lies under ``./runs``), a dataset's folder, or a records file.

    Raises:
        ValueError: when the path holds no records.
    """
    parts = []
    for kind, file in _resolve(path_or_run):
        part = load_records(file)
        if not part.empty:
            parts.append(part.assign(kind=part["kind"].fillna(kind) if "kind" in part else kind))
    if not parts:
        return pd.DataFrame(columns=[*_FIRST, "layer", "split"])
    df = pd.concat(parts, ignore_index=True)
    if "key" in df and ("split" not in df or df["split"].isna().any()):
        # Older records name their split only in their key: dataset|method_id|layer=L|split|...
        from_key = df["key"].map(lambda k: k.split("|")[3] if isinstance(k, str) else None)
        df["split"] = df["split"].fillna(from_key) if "split" in df else from_key
    return _ordered(_flatten(df))


def _of_kind(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of one kind (a frame without ``kind`` holds graph records)."""
    if "kind" not in df:
        return df if kind == "graph" else df.iloc[0:0]
    return df[df["kind"] == kind].dropna(axis=1, how="all").reset_index(drop=True)


def _by_dataset(graph: pd.DataFrame) -> list[tuple[str, pd.DataFrame, Identity]]:
    """Each dataset's records of the identity of its newest record, as the leaderboard keeps.

    Each dataset's part is as read from its own files, without other datasets' columns;
    records of other builds or versions are left out with a warning.
    """
    out = []
    for dataset, part in graph.groupby("dataset", sort=True):
        part, ident = newest_identity(part.dropna(axis=1, how="all").reset_index(drop=True))
        if ident.left_out:
            warnings.warn(
                f"{dataset}: left out {ident.left_out} records of other dataset builds or "
                f"versions (kept build {ident.dataset_hash}, sparsebench {ident.version})",
                UserWarning,
                stacklevel=3,
            )
        out.append((str(dataset), part, ident))
    return out


def frontier(df: pd.DataFrame, x: str = "sparsity", y: str = "recall") -> pd.DataFrame:
    """Each dataset's and method's Pareto frontier of ``y`` against ``x``, on layer averages.

    Graph records are averaged over layers per configuration (a configuration missing layers
    is left out, as in the leaderboard), each dataset keeping the build and version of its
    newest record; a configuration is on the frontier when no other configuration of its
    method is at least as good on both figures and better on one.

    Args:
        df: a frame from :func:`load` (graph rows are used).
        x: a per-layer metric where higher is better (``sparsity``, ``block_sparsity``, …).
        y: another one (``recall``, ``exact``, ``mass_recall``, …).

    Returns:
        One row per frontier configuration: ``dataset``, ``method``, ``method_id``, the layer
        averages and ``num_layers``, sorted by dataset, method and ``x``.

    Raises:
        ValueError: when ``df`` holds no graph records, or ``x`` or ``y`` is not such a metric
            of them.
    """
    graph = _of_kind(df, "graph")
    if graph.empty:
        raise ValueError("no graph records in this frame; load a results or run folder first")
    allowed = [n for n, m in METRICS.items() if m.per_layer and m.higher_is_better]
    for name in (x, y):
        if name not in allowed or name not in graph:
            have = [n for n in allowed if n in graph]
            raise ValueError(
                f"frontier axis {name!r} is not a per-layer metric (higher is better) of these "
                f"records; use one of {', '.join(have) or allowed}"
            )
    parts = [part for _, part, _ in _by_dataset(graph)]
    return pareto_frontier(layer_average(pd.concat(parts, ignore_index=True)), x=x, y=y)


def leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard table of each dataset in ``df``, as ``sparsebench leaderboard`` makes it.

    Per dataset: the graph records of its newest build and version, their layer averages with
    intervals, the summary at each recall threshold, accuracy records of the same identity and
    the speed records, through :func:`sparsebench.bench.report.dataset_report`.

    Args:
        df: a frame from :func:`load`, possibly filtered (rows of other kinds may be absent).

    Returns:
        The tables one under the other with a ``dataset`` column first: ranked rows, then the
        reference rows, per dataset.

    Raises:
        ValueError: when ``df`` holds no graph records.
    """
    graph = _of_kind(df, "graph")
    if graph.empty:
        raise ValueError("no graph records in this frame; load a results or run folder first")
    accuracy = _of_kind(df, "accuracy")
    speed_rows = _nest(_of_kind(df, "speed"))
    speed = speed_by_method(speed_table(speed_rows)) if not speed_rows.empty else {}
    tables = []
    for dataset, part, ident in _by_dataset(graph):
        acc = accuracy[accuracy["dataset"] == dataset] if "dataset" in accuracy else accuracy
        acc = acc.dropna(axis=1, how="all").reset_index(drop=True) if len(acc) else None
        acc, note = accuracy_records(acc, ident)
        report = dataset_report(dataset, part, acc, speed, ident, note)
        tables.append(report.table.assign(dataset=dataset))
    table = pd.concat(tables, ignore_index=True)
    return table[["dataset", *[c for c in table.columns if c != "dataset"]]]
