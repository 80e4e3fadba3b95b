"""Reference rows: the true top-k keys of each query, and uniformly random edges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ._base import Grid, Method, Tags, param
from ._registry import register
from .dsa import score_slabs, top_density, top_rows, valid_per_row
from .gold import attention_logits
from .graph import Graph
from .parts import DenseMask, RowIndex

__all__ = ["Random", "TopKOracle"]


@register("topk_oracle")
@dataclass(kw_only=True)
class TopKOracle(Method):
    """The ``k`` highest true logits of each query: an oracle reference row.

    Not a method from a paper: the upper bound of any predictor that keeps a fixed number of
    keys per query (such as top-k selection in DSA, Liu et al., 2021, arXiv:2110.11299, or
    DeepSeek's indexer), since it ranks keys by the true logits ``q·k/√d``. Only valid keys
    (real, and past ones in a decoder) are ranked; a row with fewer valid keys keeps them all.
    With ``density`` set, each row keeps ``ceil(density * valid keys)`` instead of ``k``.
    The logits are drawn a slab of query rows at a time: memory is one slab and the key lists.

    Attributes:
        k: keys kept per query.
        density: fraction of each row's valid keys to keep (overrides ``k`` when set).
    """

    k: int = param(8, min=1)
    density: float | None = param(None, min=0, max=1)
    tags: ClassVar[Tags] = Tags(reference=True)
    grid: ClassVar[Grid] = {
        "paper": {"k": [1, 2, 4, 8, 16, 32]},
        "paper_mlm": {"k": [1, 2, 4, 8, 16, 32, 64]},
        "quick": {"k": [2, 8]},
    }
    complexity: ClassVar[dict[str, str]] = {"time": "O(N² (d + log k))", "memory": "O(s N + N k)"}

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        shape = (B, H, N, k.shape[2])
        qf, kf = q.float(), k.float()

        def scores(start: int, stop: int) -> Tensor:
            return attention_logits(qf[:, :, start:stop], kf)  # (B, H, rows, M)

        validity = {"lengths": lengths, "causal": causal, "device": q.device}
        if self.density is not None:
            return Graph(shape, [RowIndex(top_density(scores, shape, self.density, **validity))])
        # A row with fewer valid keys than k keeps them all (they are listed first).
        per_row = valid_per_row(shape, lengths, causal, q.device)
        index = top_rows(scores, shape, max(1, min(self.k, shape[3])), per_row, **validity)
        return Graph(shape, [RowIndex(index)])


@register("random")
@dataclass(kw_only=True)
class Random(Method):
    """Uniformly random edges: each valid pair is kept with probability ``density``.

    A reference row (not a method from a paper): the recall any graph of the same sparsity gets
    by chance. Draws come from ``seed`` and do not depend on q and k. The output is a bool mask
    of every pair, drawn a slab of rows at a time.

    Attributes:
        density: probability of keeping each pair.
    """

    density: float = param(0.1, min=0, max=1)
    tags: ClassVar[Tags] = Tags(reference=True, stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"density": [0.02, 0.05, 0.1, 0.2, 0.3, 0.5]},
        "quick": {"density": [0.1]},
    }
    complexity: ClassVar[dict[str, str]] = {"time": "O(N²)", "memory": "O(N²)"}

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        g = self._generator(0)
        mask = torch.empty(B, H, N, M, dtype=torch.bool)
        rows = mask.view(B * H * N, M)
        # torch.rand draws its values one after another, so slabs of rows filled in memory
        # order hold the values of one torch.rand(B, H, N, M) call without holding them all.
        slabs = score_slabs((1, 1, B * H * N, M))
        draws = torch.empty(max(e - s for s, e in slabs), M) if slabs else None
        for s, e in slabs:
            torch.lt(draws[: e - s].uniform_(generator=g), self.density, out=rows[s:e])
        return Graph((B, H, N, M), [DenseMask(mask)])
