"""Harnesses: the gold graph, metrics, execution, timing, runs, reports and the command line.

Everything a user or the asv suites need is exported here, so they import from one place::

    from sparsebench.bench import Graph, execute, gold_graph, graph_metrics, prepare

The run and report names (``sweep``, ``accuracy_sweep``, ``load_records``,
``write_leaderboard``, ...) load on first use, so importing the kernels does not pull in pandas
and matplotlib.
"""

from __future__ import annotations

from sparsebench.methods import Graph, attention_logits, gold_graph

from .evaluate import evaluate
from .kernels import BlockPlan, Plan, block_plan, dense_attention, execute, prepare
from .metrics import METRICS, Metric, average_layers, graph_metrics, output_error
from .speed import DENSE, GOLD_IMPLS, dense_entmax15, gold_case, measure_case, stopwatch
from .speed_cases import validate_case

__all__ = [
    "DENSE",
    "GOLD_IMPLS",
    "METRICS",
    "Metric",
    "BlockPlan",
    "Graph",
    "Plan",
    "attention_logits",
    "average_layers",
    "block_plan",
    "dense_attention",
    "dense_entmax15",
    "evaluate",
    "execute",
    "gold_case",
    "gold_graph",
    "graph_metrics",
    "measure_case",
    "output_error",
    "prepare",
    "stopwatch",
    "validate_case",
]

_LAZY = {
    "sweep": "runs",
    "accuracy_sweep": "runs",
    "read_records": "runs",
    "provenance": "runs",
    "load_records": "report",
    "layer_average": "report",
    "pareto_frontier": "report",
    "summarize": "report",
    "write_leaderboard": "report",
    "publish": "report",
    "open_run_folder": "runs",
}
__all__ += sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
