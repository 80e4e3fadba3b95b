"""The window baseline: a band of ``w`` tokens around each query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ._base import MT_WINDOWS, Grid, Method, global_positions, predict_time, window_band
from ._registry import register
from .graph import Graph

__all__ = ["Window"]

_MLM_WINDOWS = [
    0,
    1,
    3,
    7,
    11,
    25,
    31,
    41,
    51,
    75,
    101,
    125,
    151,
    175,
    201,
    251,
    301,
    351,
    401,
    451,
    501,
    512,
]


@register("window")
@dataclass(kw_only=True)
class Window(Method):
    """A band of ``w`` tokens around each query, as the window baseline of Sparsefinder.

    Paper: Treviso et al., "Predicting Attention Sparsity in Transformers", SPNLP 2022
    (arXiv:2109.12188), window-only baseline. Query ``i`` keeps keys ``j`` with
    ``(-w)//2 + 1 <= j - i <= w//2``: an odd ``w`` is symmetric, an even ``w`` reaches one token
    further ahead than behind (``w=4`` keeps ``j - i`` in ``{-1, 0, 1, 2}``). The band is not
    shifted at the sequence ends, so edge rows keep fewer keys; in a decoder the causal mask then
    leaves the past part of the band. ``w=0`` predicts no edges. No deviation from the paper.
    The prediction is a :class:`Band` (and global tokens): a description, O(1) to predict.

    The width is ``w``, not the ``window`` option of :class:`Composable` methods (the same band
    added to another prediction): here the band is the prediction, and the name ``w`` keeps the
    method ids of published results and the CLI specs (``window:w=16``) as they are.

    Attributes:
        w: window width in tokens.
        global_tokens: 0 = none, 1 = the first token, 2 = the first and last real token, whose
            rows and columns are added (a window + global pattern, as Longformer's fixed form).
    """

    w: int = predict_time(3, min=0)
    global_tokens: int = predict_time(0, choices=(0, 1, 2))
    grid: ClassVar[Grid] = {
        "paper": {"w": MT_WINDOWS},
        "paper_mlm": {"w": _MLM_WINDOWS},
        "quick": {"w": [1, 3, 11, 27]},
    }
    complexity: ClassVar[dict[str, str]] = {"time": "O(1)", "memory": "O(1)"}

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        parts = [window_band(self.w), global_positions(lengths, B, N, self.global_tokens)]
        return Graph((B, H, N, k.shape[2]), [p for p in parts if p is not None])
