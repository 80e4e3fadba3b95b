"""Longformer as simulated in Sparsefinder: a window plus a few random global tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ._base import Composable, Grid, Tags, param, predict_time
from ._registry import register
from .graph import Graph
from .parts import Globals

__all__ = ["Longformer"]

# The paper's window sweeps on top of the official pattern's own diagonal: "no window" and 1
# are the same graph here, so the sweep starts at 1.
_MT_WINDOWS = [1, 3, 5, 7, 9, 11, 15, 19, 23, 27]
_MLM_WINDOWS = [1, 3, 11, 25]
#: The talk slides' global tokens {2, 4, …, 20} where the official parameter allows them (an
#: exclusive bound on a count drawn from 2 up, so 2 is empty); the script's 4, 8, …, 20 included.
_MAX_GLOBALS = list(range(4, 21, 2))


@register("longformer")
@dataclass(kw_only=True)
class Longformer(Composable):
    """Sliding window plus a random number of random global tokens per sequence.

    Paper: Beltagy et al., "Longformer: The Long-Document Transformer" (arXiv:2004.05150), as
    simulated by the Sparsefinder baselines (Treviso et al., arXiv:2109.12188): each sequence
    gets ``g ~ U{2, ..., max_globals - 1}`` global positions drawn uniformly; their rows and
    columns are full and shared by all heads. The local part is the common ``window`` parameter,
    whose default here is 1 (the diagonal, the official pattern's own window); the paper sweeps
    wider windows on top. No dilation.

    Deviations and switches:

    * By default the positions are drawn without replacement among the real tokens of each
      sequence (``g`` capped at the length). The official code draws them with replacement over
      the padded batch length, so shorter sequences get fewer effective globals (bug B8);
      ``official_padded_length=True`` does that.
    * Draws come from ``seed``, per sequence in batch order.

    Cost: a permutation of each sequence's real tokens, O(N), shared by its heads.

    Attributes:
        max_globals: exclusive upper bound of the number of global tokens (at least 3).
        official_padded_length: draw with replacement over the padded length (B8).
    """

    window: int = predict_time(1, min=0)
    max_globals: int = param(8, min=3)
    official_padded_length: bool = False
    tags: ClassVar[Tags] = Tags(stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"max_globals": _MAX_GLOBALS, "window": _MT_WINDOWS},
        "paper_mlm": {"max_globals": _MAX_GLOBALS, "window": _MLM_WINDOWS},
        "quick": {"max_globals": [4, 12]},
    }
    complexity: ClassVar[dict[str, str]] = {"time": "O(N)", "memory": "O(N)"}

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        n = min(N, M)
        L = lengths if lengths is not None else torch.full((B,), n, dtype=torch.long)
        g = self._generator(1)
        positions = torch.full((B, self.max_globals - 1), -1, dtype=torch.long)
        for s in range(B):
            count = int(torch.randint(2, self.max_globals, (1,), generator=g))
            if self.official_padded_length:
                pos = torch.randint(0, n, (count,), generator=g)
            else:
                pos = torch.randperm(int(L[s]), generator=g)[:count]
            positions[s, : pos.numel()] = pos
        return Graph((B, H, N, M), [Globals(positions)])
