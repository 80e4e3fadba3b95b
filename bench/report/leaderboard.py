"""Write the leaderboard of ``results/``: tables, plots and pages, generated from records only.

Each dataset's table comes from one identity: the dataset build (content hash) and sparsebench
version of its newest record. Records of other identities are left out, counted in the table's
header and reported through ``log``; they are never averaged in.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from sparsebench.datasets import DatasetError, check_name

from ..runs import atomic_write
from .pages import index_html, results_readme
from .plots import accuracy_plot, pareto_plot, speed_plot
from .speed_tables import speed_by_method, speed_markdown, speed_table
from .summary import (
    THRESHOLDS,
    Identity,
    identity_columns,
    layer_average,
    load_records,
    newest_identity,
    pareto_frontier,
    summarize,
)
from .tables import leaderboard_markdown, leaderboard_table

__all__ = ["atomic_write", "graph_record_files", "write_leaderboard"]


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def graph_record_files(results: str | os.PathLike) -> list[Path]:
    """The graph records files of a results folder: ``<dataset>/records.jsonl`` (or ``.gz``)."""
    results = Path(results)
    return sorted(
        {
            p.parent / "records.jsonl"
            for p in results.glob("*/records.jsonl*")
            if p.parent.name != "speed" and p.name in ("records.jsonl", "records.jsonl.gz")
        }
    )


def _load_checked(files: list[Path]) -> pd.DataFrame:
    """The records of ``files``; every ``dataset`` field must be a valid dataset name.

    Raises:
        ValueError: naming the file whose record names a dataset that is not a valid name
            (it would become a path outside the results folder).
    """
    parts = []
    for f in files:
        part = load_records(f)
        if part.empty:
            continue
        if "dataset" not in part:
            raise ValueError(f"{f}: records without a 'dataset' field; these are not sweep records")
        for name in part["dataset"].unique():
            try:
                check_name(name)
            except DatasetError as e:
                raise ValueError(f"{f}: a record's dataset field: {e}") from None
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_leaderboard(
    results: str | os.PathLike = "results", *, log: Callable[[str], None] | None = None
) -> list[Path]:
    """Write tables, plots, the index page and the README of ``results/`` from its records.

    Args:
        results: the folder (a run folder or the published ``results/``).
        log: where warnings go (default: one line on stderr each), such as records of other
            dataset builds or versions left out of a table (default: ``warnings.warn``).

    Raises:
        ValueError: if there are no graph records under ``results/*/records.jsonl``, or a
            record's ``dataset`` is not a valid name.
    """
    log = log or _warn
    results = Path(results)
    df = _load_checked(graph_record_files(results))
    if df.empty:
        raise ValueError(f"no records under {results}/*/records.jsonl; run `sparsebench sweep`")
    kept, idents = [], {}
    for dataset, part in df.groupby("dataset", sort=True):
        part, ident = newest_identity(part)
        kept.append(part)
        idents[str(dataset)] = ident
        if ident.left_out:
            log(
                f"{dataset}: left out {ident.left_out} records of other dataset builds or "
                f"versions (the table is of build {ident.dataset_hash}, sparsebench "
                f"{ident.version}, those of its newest record)"
            )
    df = pd.concat(kept, ignore_index=True)
    meta = _provenance(df)
    speed_path = results / "speed" / "records.jsonl"
    sp = speed_table(load_records(speed_path)) if speed_path.exists() else pd.DataFrame()
    speed = speed_by_method(sp)
    written: list[Path] = []
    sections = []
    for dataset, part in df.groupby("dataset", sort=True):
        ident = idents[str(dataset)]
        files, table, imgs = _write_dataset(results, str(dataset), part, ident, speed, log)
        written += files
        sections.append((str(dataset), table, imgs, ident.describe()))
    speed_imgs = []
    if not sp.empty:
        atomic_write(results / "speed" / "speed.csv", sp.to_csv(index=False))
        atomic_write(results / "speed" / "speed.md", speed_markdown(sp))
        speed_plot(sp, results / "speed" / "speed.png")
        written += [results / "speed" / "speed.md", results / "speed" / "speed.png"]
        speed_imgs.append("speed/speed.png")
    index = results / "index.html"
    atomic_write(index, index_html(sections, meta, speed_imgs))
    readme = results / "README.md"
    atomic_write(readme, results_readme(sections, meta))
    return [*written, index, readme]


def _provenance(df: pd.DataFrame) -> str:
    """The line under every table: how many records, from which devices, dates and commits."""
    dates = pd.to_datetime(df["date"], errors="coerce") if "date" in df else None
    machine = ", ".join(sorted(set(df.get("device", pd.Series(["?"])).astype(str))))
    cpu = ", ".join(sorted(set(df.get("cpu", pd.Series(["?"])).astype(str))))
    span = (
        f"{dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}"
        if dates is not None and dates.notna().any()
        else "unknown dates"
    )
    return (
        f"Generated by `sparsebench leaderboard` from {len(df)} records; device {machine} "
        f"({cpu}); records dated {span}; git {', '.join(sorted(set(df['git_sha'].str[:10])))}"
        if "git_sha" in df
        else f"Generated from {len(df)} records."
    )


def _accuracy(folder: Path, ident: Identity) -> tuple[pd.DataFrame | None, str]:
    """The dataset's task-accuracy records (one comparable run), and a note for its table.

    Only records of the table's identity (dataset build and version) are used.
    """
    acc_path = folder / "accuracy.jsonl"
    acc = load_records(acc_path) if acc_path.exists() else None
    note = ""
    if acc is not None and not acc.empty:
        hashes, versions = identity_columns(acc)
        same = (hashes == ident.dataset_hash) & (versions == ident.version)
        if (~same).any():
            note += (
                f"\nLeft out {int((~same).sum())} accuracy records of other dataset builds "
                "or versions.\n"
            )
        acc = acc[same].reset_index(drop=True)
    if acc is not None and "cosine" in acc and "accuracy" not in acc:
        # Encoders without a task head report embedding fidelity in the accuracy columns.
        acc = acc.rename(columns={"cosine": "accuracy", "delta_cosine": "delta_accuracy"})
        note += (
            "\nAccuracy columns hold embedding fidelity: the mean cosine similarity of "
            "held-out sentence embeddings with the predicted graph against full attention.\n"
        )
    if acc is not None and not acc.empty and "windows" in acc and "split" in acc:
        # Runs over different numbers of held-out windows are not comparable: use the run
        # with the most configurations (the most windows among equals).
        size = acc.groupby("split").agg(n=("method_id", "nunique"), w=("windows", "max"))
        acc = acc[acc["split"] == size.sort_values(["n", "w"]).index[-1]]
    return acc, note


def _write_dataset(
    results: Path,
    dataset: str,
    part: pd.DataFrame,
    ident: Identity,
    speed: dict[str, dict],
    log: Callable[[str], None],
) -> tuple[list[Path], pd.DataFrame, list[str]]:
    """One dataset's files; returns them, its table and its images relative to ``results/``."""
    folder = results / check_name(dataset)
    avg = layer_average(part)
    summary = summarize(avg, THRESHOLDS)
    acc, note = _accuracy(folder, ident)
    if "Left out" in note:
        log(f"{dataset}: {note.strip().splitlines()[0]}")
    table = leaderboard_table(summary, avg, acc, speed)
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "leaderboard.md"
    meta = f"{ident.describe()}\n\n{_provenance(part)}"
    atomic_write(md, leaderboard_markdown(table, dataset, meta + note))
    csv = folder / "leaderboard.csv"
    atomic_write(csv, table.to_csv(index=False))
    full = folder / "configs.csv"
    atomic_write(full, avg.dropna(axis=1, how="all").to_csv(index=False))
    png = folder / "pareto.png"
    pareto_plot(pareto_frontier(avg), avg, dataset, png)
    written = [md, csv, full, png]
    imgs = [f"{dataset}/pareto.png"]
    if (
        acc is not None
        and not acc.empty
        and accuracy_plot(acc, avg, dataset, folder / "accuracy.png")
    ):
        written.append(folder / "accuracy.png")
        imgs.append(f"{dataset}/accuracy.png")
    return written, table, imgs
