"""Attention restricted to a graph, by paths that really skip the work the graph excludes.

``plan = prepare(graph, path="auto", block_size=128)`` chooses the path once and builds its
layout; ``execute(q, k, v, plan_or_graph, normalizer=..., alpha=...)`` runs it. Modules:

* :mod:`.plan` — the block layout of a graph (:class:`BlockPlan`, :func:`block_plan`).
* :mod:`.block` — the block path, with heavy rows (global tokens' rows) split off.
* :mod:`.grouped` — the grouped path, padded batches or packed groups through xformers.
* :mod:`.flex` — FlexAttention on the block layout (softmax).
* :mod:`.flex_entmax` — α-entmax on the block layout by FlexAttention passes.
* :mod:`.dense` — the dense masked reference (:func:`dense_attention`).
* :mod:`.normalize` — score scale, normalisers, in-place 1.5-entmax.
* :mod:`.dispatch` — :class:`Plan`, :func:`prepare` and :func:`execute`.
"""

from __future__ import annotations

from .dense import dense_attention
from .dispatch import DEFAULT_BLOCK_SIZE, PATHS, Plan, execute, prepare
from .normalize import Normalizer
from .plan import BlockPlan, block_plan

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "PATHS",
    "BlockPlan",
    "Normalizer",
    "Plan",
    "block_plan",
    "dense_attention",
    "execute",
    "prepare",
]
