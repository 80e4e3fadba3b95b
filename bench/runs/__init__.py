"""Runs that write records: grid sweeps of graph quality and task-accuracy runs.

Both go through one loop (:mod:`.runner`): configurations are grouped by their fit-time
parameters, each group is fitted once and its predict-time parameters are varied on the fitted
instance, and every finished configuration is appended at once to a resumable JSON-lines record
file (:mod:`.records`), keyed with the dataset's content hash and the sparsebench version, with
one writer at a time. Runs on the same data can share their fits (:class:`.runner.FitStore`:
``sparsebench run`` fits once for its sweep and accuracy pass), and the commands that run them
keep freed memory for reuse (:mod:`.memory`). Each run writes into its own run folder
(:mod:`.folders`).
"""

from __future__ import annotations

from ..evaluate import check_layers, check_split
from .accuracy import accuracy_sweep, frontier_configs, reported_configs, restrict_with
from .folders import RUN_FILE, atomic_write, is_run_folder, open_run_folder, read_run
from .memory import reuse_freed_memory
from .records import (
    RecordFile,
    RecordsError,
    RecordsLockedError,
    RecordsWarning,
    append_record,
    lock_path,
    provenance,
    read_records,
    records_writer,
    repair_tail,
)
from .runner import (
    FitStore,
    Fitted,
    configurations,
    expand_grid,
    fit_key,
    fit_once,
    group_by_fit,
    record_identity,
    record_key,
    select_methods,
    with_predict_params,
)
from .sweep import BLOCK_SIZE, run_unit, sweep, sweep_plan

__all__ = [
    "BLOCK_SIZE",
    "RUN_FILE",
    "FitStore",
    "Fitted",
    "RecordFile",
    "RecordsError",
    "RecordsLockedError",
    "RecordsWarning",
    "accuracy_sweep",
    "append_record",
    "atomic_write",
    "check_layers",
    "check_split",
    "configurations",
    "expand_grid",
    "fit_key",
    "fit_once",
    "frontier_configs",
    "group_by_fit",
    "is_run_folder",
    "lock_path",
    "open_run_folder",
    "provenance",
    "read_records",
    "read_run",
    "record_identity",
    "record_key",
    "records_writer",
    "repair_tail",
    "reported_configs",
    "restrict_with",
    "reuse_freed_memory",
    "run_unit",
    "select_methods",
    "sweep",
    "sweep_plan",
    "with_predict_params",
]
