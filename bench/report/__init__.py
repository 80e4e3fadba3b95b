"""The report: leaderboard tables, plots and pages of ``results/``, generated from records.

Rooms: :mod:`.summary` (records to layer averages with intervals, frontiers and summary
figures), :mod:`.intervals` (bootstrap resamples shared by many configurations, accuracy
intervals), :mod:`.lengths` (quality per sequence-length bin), :mod:`.formatting` (figures with
their intervals, best marks), :mod:`.tables` (the leaderboard table and its markdown),
:mod:`.assemble` (a results folder to each dataset's table), :mod:`.export` (md, csv, html and
LaTeX), :mod:`.compare` (two runs side by side), :mod:`.speed_tables` (speed and memory),
:mod:`.plots`, :mod:`.pages` (``index.html``, ``README.md``), :mod:`.leaderboard` (writes them
all), :mod:`.publish` (run folders into ``results/``) and :mod:`.show` (one head's gold graph
beside a prediction).
"""

from __future__ import annotations

from .assemble import DatasetReport, dataset_report, load_reports
from .compare import compare_runs, format_comparison
from .export import FORMATS, leaderboard_latex, render_leaderboard
from .leaderboard import write_leaderboard
from .publish import publish
from .show import show
from .speed_tables import speed_by_method, speed_table
from .summary import (
    INTERVAL_METRICS,
    THRESHOLDS,
    by_length_table,
    layer_average,
    load_records,
    pareto_frontier,
    summarize,
    with_intervals,
)
from .tables import COLUMNS, Column, display_name, is_reference, leaderboard_table

__all__ = [
    "COLUMNS",
    "FORMATS",
    "INTERVAL_METRICS",
    "THRESHOLDS",
    "Column",
    "DatasetReport",
    "by_length_table",
    "compare_runs",
    "dataset_report",
    "display_name",
    "format_comparison",
    "is_reference",
    "layer_average",
    "leaderboard_latex",
    "leaderboard_table",
    "load_records",
    "load_reports",
    "pareto_frontier",
    "publish",
    "render_leaderboard",
    "show",
    "speed_by_method",
    "speed_table",
    "summarize",
    "with_intervals",
    "write_leaderboard",
]
