"""Harnesses: the gold graph, metrics, evaluation and the command line.

The core types are re-exported here so users import them from one place::

    from sparsebench.bench import Graph, gold_graph, graph_metrics
"""

from __future__ import annotations

from sparsebench.methods import Graph, attention_logits, gold_graph

from .evaluate import evaluate
from .metrics import METRICS, average_layers, graph_metrics, output_error

__all__ = [
    "METRICS",
    "Graph",
    "attention_logits",
    "average_layers",
    "evaluate",
    "gold_graph",
    "graph_metrics",
    "output_error",
]
