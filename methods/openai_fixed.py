"""The fixed pattern of OpenAI's Sparse Transformer: stride blocks plus summary positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ._base import MLM_WINDOWS, MT_WINDOWS, Composable, Grid, param
from ._registry import register
from .graph import Graph
from .parts import RowIndex

__all__ = ["OpenAIFixed", "fixed_pattern"]


def fixed_pattern(n: int, stride: int, expressivity: int) -> Tensor:
    """Bidirectional fixed pattern as a bool ``(n, n)`` mask.

    Row ``i`` keeps its stride block ``[l*(i//l), l*(i//l) + l]`` (for ``i`` a positive multiple
    of ``l``: ``[i - l, i]``) and the summary positions ``{l*m - c, ..., l*m}`` of every block
    ``m >= 1``, all clipped to ``[0, n)``. The causal pattern is this mask below the diagonal.
    """
    i = torch.arange(n).view(-1, 1)
    j = torch.arange(n).view(1, -1)
    start = torch.where((i % stride == 0) & (i > 0), i - stride, (i // stride) * stride)
    stop = torch.where((i % stride == 0) & (i > 0), i, (i // stride) * stride + stride)
    block = (j >= start) & (j <= stop)
    # Summary columns: j with (j + c) mod l <= c, from the first block's summary on.
    summary = ((j + expressivity) % stride <= expressivity) & (j >= stride - expressivity)
    return block | summary


@register("openai_fixed")
@dataclass(kw_only=True)
class OpenAIFixed(Composable):
    """OpenAI Sparse Transformer "fixed" attention with stride ``l`` and expressivity ``c``.

    Paper: Child et al., "Generating Long Sequences with Sparse Transformers"
    (arXiv:1904.10509), in the form of fairseq's sparse attention as used by the Sparsefinder
    baselines (Treviso et al., arXiv:2109.12188): row ``i`` attends its stride block and the
    "summary" positions ``l*m - c .. l*m`` of every block. In a decoder the causal mask leaves
    the past part of both, which is exactly the official causal variant. One pattern for all
    heads and sequences. The pattern of a row does not depend on the sequence length beyond
    clipping, so the padded-length convention of the official code (B8) changes nothing here and
    needs no switch; the official assertion ``n > l`` is dropped (short sequences are allowed).

    Cost: the pattern is built as a dense ``N × N`` mask and each row's keys are listed by a
    sort, O(N² log N) time and O(N²) memory, once per call (shared by every sequence and head).
    The key lists hold about ``N (l + N (c + 1) / l)`` entries.

    Attributes:
        stride: block length ``l``.
        expressivity: number of summary positions ``c`` per block (plus the block end).
    """

    stride: int = param(8, min=1)
    expressivity: int = param(2, min=0)
    grid: ClassVar[Grid] = {
        "paper": {"stride": [4, 8, 12, 16, 20], "window": MT_WINDOWS},
        "paper_mlm": {"stride": [4, 8, 12, 16, 20], "window": MLM_WINDOWS},
        "quick": {"stride": [4, 16]},
    }
    complexity: ClassVar[dict[str, str]] = {"time": "O(N² log N)", "memory": "O(N²)"}

    def _check_values(self) -> None:
        if self.expressivity >= self.stride:
            raise ValueError(
                f"method 'openai_fixed': expressivity must be below stride={self.stride}, "
                f"got {self.expressivity}"
            )

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        n = max(N, M)
        mask = fixed_pattern(n, self.stride, self.expressivity)[:N, :M]
        # Per-row key lists: the kept keys first (stable sort keeps them in position order).
        width = max(1, int(mask.sum(-1).max()))
        order = torch.sort(mask.to(torch.int8), dim=-1, descending=True, stable=True).indices
        index = order[:, :width]
        index = torch.where(mask.gather(-1, index), index, -1)
        return Graph((B, H, N, M), [RowIndex(index.view(1, 1, N, width))])
