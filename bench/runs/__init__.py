"""Runs that write records: grid sweeps of graph quality and task-accuracy runs.

Both go through one loop (:mod:`.runner`): configurations are grouped by their fit-time
parameters, each group is fitted once and its predict-time parameters are varied on the fitted
instance, and every finished configuration is appended at once to a resumable JSON-lines record
file (:mod:`.records`).
"""

from __future__ import annotations

from .accuracy import accuracy_sweep, restrict_with
from .records import RecordFile, append_record, provenance, read_records, repair_tail
from .runner import (
    Fitted,
    configurations,
    expand_grid,
    fit_key,
    fit_once,
    group_by_fit,
    record_key,
    with_predict_params,
)
from .sweep import BLOCK_SIZE, run_unit, sweep

__all__ = [
    "BLOCK_SIZE",
    "Fitted",
    "RecordFile",
    "accuracy_sweep",
    "append_record",
    "configurations",
    "expand_grid",
    "fit_key",
    "fit_once",
    "group_by_fit",
    "provenance",
    "read_records",
    "record_key",
    "repair_tail",
    "restrict_with",
    "run_unit",
    "sweep",
    "with_predict_params",
]
