"""Reference rows: every valid edge (``full``) and the gold α-entmax support (``gold``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

from torch import Tensor

from ._base import Grid, Method, Tags, param
from ._registry import register
from .gold import gold_graph
from .graph import Graph
from .parts import Band

if TYPE_CHECKING:  # type hints only: methods never import the datasets package at run time
    from sparsebench.datasets import QKData

__all__ = ["Full", "Gold"]

#: The α an unbound ``gold`` row predicts with: entmax15, the paper's models.
DEFAULT_ALPHA = 1.5


@register("full")
@dataclass(kw_only=True)
class Full(Method):
    """Every valid edge: dense attention (recall 1, sparsity 0). A reference row.

    The prediction is one all-covering :class:`Band`: a description, O(1) to predict.
    """

    tags: ClassVar[Tags] = Tags(reference=True)
    grid: ClassVar[Grid] = {"paper": {}, "quick": {}}
    complexity: ClassVar[dict[str, str]] = {"time": "O(1)", "memory": "O(1)"}

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        # An all-covering band keeps the graph structured (edge counts in closed form).
        return Graph((B, H, N, M), [Band(-N, M)])


@register("gold")
@dataclass(kw_only=True)
class Gold(Method):
    """The gold α-entmax support itself (recall 1, exact 1). A reference row (an oracle).

    The α is the data's: harnesses call :meth:`for_data`, which binds ``alpha=None`` to the
    dataset's ``alpha``, so the row is the gold graph of the attention being predicted. A
    ``Gold`` that predicts without being bound uses ``DEFAULT_ALPHA`` (1.5, entmax15). The
    default row's method id stays ``gold``; a bound one carries its α (``gold[alpha=1.5]``).

    Cost: every score, O(N² d), computed in slabs of s rows; memory is one slab and the key
    lists, k the widest gold row (:func:`gold_graph`).

    Attributes:
        alpha: entmax α of the attention being predicted, finite and > 1; ``None`` = the
            data's.
    """

    alpha: float | None = param(None, above=1)
    tags: ClassVar[Tags] = Tags(reference=True)
    grid: ClassVar[Grid] = {"paper": {}, "quick": {}}
    complexity: ClassVar[dict[str, str]] = {"time": "O(N² d)", "memory": "O(s N + N k)"}

    def for_data(self, data: QKData) -> Self:
        """This row with ``alpha`` bound to ``data.alpha`` (unchanged when ``alpha`` is set)."""
        return self if self.alpha is not None else self.clone(alpha=float(data.alpha))

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        alpha = DEFAULT_ALPHA if self.alpha is None else self.alpha
        return gold_graph(q, k, alpha=alpha, lengths=lengths, causal=causal)
