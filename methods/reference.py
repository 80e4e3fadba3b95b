"""Reference rows: every valid edge (``full``) and the gold α-entmax support (``gold``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ._base import Grid, Method, Tags
from ._registry import register
from .gold import gold_graph
from .graph import Band, Graph

__all__ = ["Full", "Gold"]


@register("full")
@dataclass(kw_only=True)
class Full(Method):
    """Every valid edge: dense attention (recall 1, sparsity 0). A reference row."""

    tags: ClassVar[Tags] = Tags(reference=True, structure=("band",))
    grid: ClassVar[Grid] = {"paper": {}, "quick": {}}

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        # An all-covering band keeps the graph structured (edge counts in closed form).
        return Graph((B, H, N, M), [Band(-N, M)])


@register("gold")
@dataclass(kw_only=True)
class Gold(Method):
    """The gold α-entmax support itself (recall 1, exact 1). A reference row (an oracle).

    Attributes:
        alpha: entmax α of the attention being predicted.
    """

    alpha: float = 1.5
    tags: ClassVar[Tags] = Tags(reference=True, structure=("rows",))
    grid: ClassVar[Grid] = {"paper": {}, "quick": {}}

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        return gold_graph(q, k, alpha=self.alpha, lengths=lengths, causal=causal)
