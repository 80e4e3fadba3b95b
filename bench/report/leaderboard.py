"""Write the leaderboard of ``results/``: tables, plots and pages, generated from records only.

Each dataset's table comes from one identity (see :mod:`.assemble`); the formats asked for
decide which table files are written (``leaderboard.md``, ``.csv``, ``.tex`` per dataset and
the ``index.html`` page), and a table file already in the folder is rewritten too, so that none
is left stale; ``configs.csv``, ``by_length.csv``, the plots and the README are always written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from sparsebench.datasets import check_name

from ..gpu_report import write_gpu_report
from ..runs import atomic_write
from . import plots
from .assemble import DatasetReport, graph_record_files, load_reports, provenance
from .export import check_formats, leaderboard_latex
from .pages import index_html, results_readme
from .speed_tables import speed_markdown
from .summary import by_length_table, pareto_frontier
from .tables import leaderboard_markdown

__all__ = ["atomic_write", "graph_record_files", "write_leaderboard"]


def write_leaderboard(
    results: str | os.PathLike = "results",
    *,
    formats: str | Iterable[str] = ("md", "csv", "html"),
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write tables, plots, the index page and the README of ``results/`` from its records.

    Args:
        results: the folder (a run folder or the published ``results/``).
        formats: the table formats to write (a comma list or an iterable of ``md``, ``csv``,
            ``html``, ``latex``): ``<dataset>/leaderboard.md``, ``.csv``, ``.tex`` and
            ``index.html``. Formats whose files the folder already holds are rewritten as well.
        log: where warnings go (default: one line on stderr each), such as records of other
            dataset builds or versions left out of a table (default: ``warnings.warn``).

    Returns:
        The files written.

    Raises:
        ValueError: for an unknown format, if there are no graph records under
            ``results/*/records.jsonl``, or a record's ``dataset`` is not a valid name.
    """
    results = Path(results)
    formats = check_formats(formats)
    formats += tuple(f for f in _present(results) if f not in formats)
    reports, sp = load_reports(results, log)
    meta = provenance(pd.concat([r.records for r in reports], ignore_index=True))
    written: list[Path] = []
    sections = []
    for rep in reports:
        files, imgs = _write_dataset(results, rep, formats)
        written += files
        sections.append((rep.dataset, rep.table, imgs, rep.identity.describe()))
    speed_imgs = []
    if not sp.empty:
        atomic_write(results / "speed" / "speed.csv", sp.to_csv(index=False))
        atomic_write(results / "speed" / "speed.md", speed_markdown(sp))
        plots.speed_plot(sp, results / "speed" / "speed.png")
        written += [results / "speed" / "speed.md", results / "speed" / "speed.png"]
        speed_imgs.append("speed/speed.png")
        written += write_gpu_report(results / "speed")  # the GPU preset's gpu.md and gpu.png
    if "html" in formats:
        index = results / "index.html"
        atomic_write(index, index_html(sections, meta, speed_imgs))
        written.append(index)
    readme = results / "README.md"
    atomic_write(readme, results_readme(sections, meta))
    return [*written, readme]


#: The table files of each format, relative to the results folder (``*``: a dataset).
_TABLE_FILES = {
    "md": "*/leaderboard.md",
    "csv": "*/leaderboard.csv",
    "latex": "*/leaderboard.tex",
    "html": "index.html",
}


def _present(results: Path) -> list[str]:
    """The formats whose table files the folder already holds."""
    return [f for f, pattern in _TABLE_FILES.items() if any(results.glob(pattern))]


def _write_dataset(
    results: Path, rep: DatasetReport, formats: tuple[str, ...]
) -> tuple[list[Path], list[str]]:
    """One dataset's files; returns them and its images relative to ``results/``."""
    dataset = rep.dataset
    folder = results / check_name(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if "md" in formats:
        written.append(folder / "leaderboard.md")
        atomic_write(written[-1], leaderboard_markdown(rep.table, dataset, rep.meta))
    if "csv" in formats:
        written.append(folder / "leaderboard.csv")
        atomic_write(written[-1], rep.table.to_csv(index=False))
    if "latex" in formats:
        written.append(folder / "leaderboard.tex")
        atomic_write(written[-1], leaderboard_latex(rep.table, dataset))
    full = folder / "configs.csv"
    atomic_write(full, rep.avg.dropna(axis=1, how="all").to_csv(index=False))
    png = folder / "pareto.png"
    plots.pareto_plot(pareto_frontier(rep.avg), rep.avg, dataset, png)
    written += [full, png]
    imgs = [f"{dataset}/pareto.png"]
    acc = rep.accuracy
    if (
        acc is not None
        and not acc.empty
        and plots.accuracy_plot(acc, rep.avg, dataset, folder / "accuracy.png")
    ):
        written.append(folder / "accuracy.png")
        imgs.append(f"{dataset}/accuracy.png")
    lengths = by_length_table(rep.records, rep.summary)
    if not lengths.empty:
        written.append(folder / "by_length.csv")
        atomic_write(written[-1], lengths.to_csv(index=False))
        if plots.length_plot(lengths, dataset, folder / "length.png"):
            written.append(folder / "length.png")
            imgs.append(f"{dataset}/length.png")
    return written, imgs
