"""The report: leaderboard tables, plots and pages of ``results/``, generated from records.

Rooms: :mod:`.summary` (records to layer averages, frontiers and summary figures),
:mod:`.tables` (the leaderboard table and its markdown), :mod:`.speed_tables` (speed and
memory), :mod:`.plots`, :mod:`.pages` (``index.html``, ``README.md``), :mod:`.leaderboard`
(writes them all), :mod:`.publish` (run folders into ``results/``) and :mod:`.show` (one
head's gold graph beside a prediction).
"""

from __future__ import annotations

from .leaderboard import write_leaderboard
from .publish import publish
from .show import show
from .speed_tables import speed_by_method, speed_table
from .summary import THRESHOLDS, layer_average, load_records, pareto_frontier, summarize
from .tables import COLUMNS, Column, display_name, is_reference

__all__ = [
    "COLUMNS",
    "THRESHOLDS",
    "Column",
    "display_name",
    "is_reference",
    "layer_average",
    "load_records",
    "pareto_frontier",
    "publish",
    "show",
    "speed_by_method",
    "speed_table",
    "summarize",
    "write_leaderboard",
]
