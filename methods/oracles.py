"""Reference rows: the true top-k keys of each query, and uniformly random edges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ._base import Grid, Method, Tags, param
from ._masks import valid_pairs
from ._registry import register
from .dsa import top_density
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

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        valid = valid_pairs(B, N, M, lengths, causal).expand(B, 1, N, M)
        scores = torch.where(valid, attention_logits(q.float(), k.float()), float("-inf"))
        if self.density is not None:
            return Graph((B, H, N, M), [RowIndex(top_density(scores, valid, self.density))])
        width = max(1, min(self.k, M))
        _, idx = scores.topk(width, dim=-1)  # (B, H, N, width)
        keep = (torch.arange(width) < self.k).view(1, 1, 1, -1) & valid.expand_as(scores).gather(
            -1, idx
        )
        return Graph((B, H, N, M), [RowIndex(torch.where(keep, idx, -1))])


@register("random")
@dataclass(kw_only=True)
class Random(Method):
    """Uniformly random edges: each valid pair is kept with probability ``density``.

    A reference row (not a method from a paper): the recall any graph of the same sparsity gets
    by chance. Draws come from ``seed`` and do not depend on q and k.

    Attributes:
        density: probability of keeping each pair.
    """

    density: float = param(0.1, min=0, max=1)
    tags: ClassVar[Tags] = Tags(reference=True, stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"density": [0.02, 0.05, 0.1, 0.2, 0.3, 0.5]},
        "quick": {"density": [0.1]},
    }

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        mask = torch.rand(B, H, N, M, generator=self._generator(0)) < self.density
        return Graph((B, H, N, M), [DenseMask(mask)])
