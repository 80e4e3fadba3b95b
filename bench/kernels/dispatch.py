"""Choosing the execution path of a graph once (:func:`prepare`) and running it (:func:`execute`).

Paths:

* ``"dense"`` — the reference: scores of all pairs, masked to the graph (row slabs, so memory
  stays bounded), normalised, times ``v``.
* ``"block"`` — the graph's block layout; each query block attends over its gathered kept key
  blocks (:mod:`~sparsebench.bench.kernels.block`).
* ``"flex"`` — softmax only: the same block layout fed to FlexAttention.
* ``"flex_entmax"`` — α-entmax only: the same layout, the threshold found by FlexAttention
  passes, then one FlexAttention output pass (:mod:`~sparsebench.bench.kernels.flex_entmax`).
* ``"grouped"`` — for graphs that are one set of groups: each group attends within itself.

All paths give the same result as ``"dense"`` on the same graph; a query with no allowed key
outputs zeros (it never falls back to full attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sparsebench.methods import Graph, check_alpha, check_normalizer, check_qk, to_scoring

from .block import block_attention
from .dense import masked_attention
from .flex import flex_attention
from .flex_entmax import flex_entmax_attention
from .grouped import grouped_attention, single_groups
from .normalize import Normalizer
from .plan import BlockPlan, block_plan

__all__ = ["DEFAULT_BLOCK_SIZE", "PATHS", "PathName", "Plan", "execute", "prepare"]

PathName = Literal["block", "grouped", "flex", "flex_entmax", "dense"]
#: The execution paths, as :attr:`Plan.path` names them.
PATHS: tuple[str, ...] = ("block", "grouped", "flex", "flex_entmax", "dense")
#: The paths that lay the graph out in blocks.
_LAID_OUT = ("block", "flex", "flex_entmax")
#: Kernel block size of the block and flex paths unless one is given.
DEFAULT_BLOCK_SIZE = 128


@dataclass(frozen=True)
class Plan:
    """How a graph is executed: its path, chosen once, and the layout that path needs.

    Attributes:
        path: ``"block"``, ``"grouped"``, ``"flex"`` or ``"dense"``.
        graph: the graph the plan executes.
        block_size: kernel block size of the block and flex paths.
        layout: the graph's block layout (``block`` and ``flex`` paths), else ``None``.
    """

    path: PathName
    graph: Graph
    block_size: int
    layout: BlockPlan | None = None


def prepare(
    graph: Graph,
    *,
    path: Literal["auto", "block", "grouped", "flex", "flex_entmax", "dense"] = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Plan:
    """Choose the execution path of ``graph`` and build what it needs.

    Args:
        graph: the allowed edges.
        path: ``"auto"`` picks ``grouped`` for a graph that is one slot of
            :class:`~sparsebench.methods.Groups`, else ``block``; or one path by name.
        block_size: kernel block size for ``block`` and ``flex``.

    Returns:
        A :class:`Plan`; its ``layout`` is the block layout when the path uses one.

    Raises:
        ValueError: for an unknown path, a block size that is not a positive integer, or a
            ``graph`` that is not a :class:`~sparsebench.methods.Graph`.
        NotImplementedError: ``grouped`` for a graph that is not one slot of groups.
    """
    if not isinstance(graph, Graph):
        raise ValueError(f"graph must be a sparsebench Graph, got {type(graph).__name__}")
    _check_path(path)
    _check_block_size(block_size)
    if path == "auto":
        path = "grouped" if single_groups(graph) is not None else "block"
    if path == "grouped" and single_groups(graph) is None:
        raise NotImplementedError("the grouped path needs a graph of exactly one Groups slot")
    layout = block_plan(graph, block_size) if path in _LAID_OUT else None
    return Plan(path, graph, block_size, layout)


def execute(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    plan: Plan | Graph,
    *,
    normalizer: Normalizer = "entmax",
    alpha: float = 1.5,
    path: Literal["auto", "block", "grouped", "flex", "flex_entmax", "dense"] = "auto",
    block_size: int | None = None,
) -> Tensor:
    """Attention of ``q`` over ``k``/``v`` restricted to the edges of a graph.

    Float16 and bfloat16 inputs are computed in float32 (their scores overflow in half
    precision), except on CUDA by the FlexAttention paths, which never store a score and
    accumulate in float32; the output has ``v``'s dtype. Integer and complex inputs are
    rejected.

    Args:
        q: queries ``(B, H, N, D)``, unscaled.
        k: keys ``(B, H, M, D)``.
        v: values ``(B, H, M, Dv)``.
        plan: a :class:`Plan` from :func:`prepare`, or a :class:`~sparsebench.methods.Graph`
            (prepared here with ``path`` and ``block_size``). Its lengths and causality apply.
        normalizer: ``"entmax"`` (α-entmax, exact over the allowed entries) or ``"softmax"``.
        alpha: entmax α, finite and > 1.
        path: with a graph, as for :func:`prepare`; with a plan, ``"auto"`` or the plan's own.
        block_size: with a graph, the kernel block size (default 128); with a plan, ``None``
            or the plan's own.

    Returns:
        ``(B, H, N, Dv)``; rows of queries with no allowed key are zero.

    Raises:
        ValueError: on invalid tensors or shapes that disagree, an unknown path or normalizer,
            an α that is not finite and > 1, or ``path``/``block_size`` that contradict a given
            plan.
        NotImplementedError: ``flex`` with entmax, ``flex_entmax`` with softmax, ``grouped`` on
            a graph that is not one slot of groups.
    """
    check_normalizer(normalizer)
    alpha = check_alpha(alpha)
    plan = _checked_plan(q, k, v, plan, normalizer, path, block_size)
    graph = plan.graph
    dtype = v.dtype
    if plan.path not in ("flex", "flex_entmax"):  # the flex paths choose their precision
        q, k, v = to_scoring(q), to_scoring(k), to_scoring(v)
    with torch.no_grad():
        if plan.path == "flex_entmax":
            out = flex_entmax_attention(q, k, v, plan.layout, alpha)
        elif plan.path == "dense":
            out = masked_attention(q, k, v, graph, normalizer, alpha)
        elif plan.path == "block":
            out = block_attention(q, k, v, plan.layout, normalizer, alpha)
        elif plan.path == "grouped":
            out = grouped_attention(q, k, v, graph, normalizer, alpha)
        else:
            out = flex_attention(q, k, v, plan.layout)
    return out.to(dtype)


def _checked_plan(q, k, v, plan, normalizer: str, path: str, block_size: int | None) -> Plan:
    """The plan ``execute`` runs, after checking the tensors, the path and the block size."""
    _check_path(path)
    if block_size is not None:
        _check_block_size(block_size)
    if not isinstance(plan, Plan | Graph):
        raise ValueError(f"plan must be a Plan or a Graph, got {type(plan).__name__}")
    graph = plan.graph if isinstance(plan, Plan) else plan
    check_qk(q, k, v=v, lengths=graph.lengths, causal=graph.causal)
    if graph.shape != (*q.shape[:3], k.shape[2]):
        raise ValueError(f"graph shape {graph.shape} does not match q/k {tuple(q.shape)}")
    if isinstance(plan, Plan):
        if path not in ("auto", plan.path):
            raise ValueError(f"path {path!r} contradicts the plan's path {plan.path!r}")
        if block_size not in (None, plan.block_size):
            raise ValueError(f"block_size {block_size} contradicts the plan's {plan.block_size}")
    else:
        _check_flex_normalizer(path, normalizer)
        size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
        plan = prepare(graph, path=path, block_size=size)
    _check_flex_normalizer(plan.path, normalizer)
    return plan


def _check_flex_normalizer(path: str, normalizer: str) -> None:
    """``flex`` runs softmax only, ``flex_entmax`` α-entmax only."""
    if path == "flex" and normalizer != "softmax":
        raise NotImplementedError(
            "FlexAttention normalises with softmax only on path 'flex'; use path 'flex_entmax' "
            "for α-entmax"
        )
    if path == "flex_entmax" and normalizer != "entmax":
        raise NotImplementedError(
            "the flex_entmax path normalises with α-entmax only; use path 'flex' for softmax"
        )


def _check_path(path: object) -> None:
    if path != "auto" and path not in PATHS:
        raise ValueError(f"unknown path {path!r}; use auto, {', '.join(PATHS)}")


def _check_block_size(block_size: object) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
