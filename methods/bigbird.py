"""BigBird: a 3-block window, global first and last blocks, and random blocks per row."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch
from torch import Tensor

from ._base import MLM_WINDOWS, MT_WINDOWS, Composable, Grid, Tags, param
from ._registry import register
from .graph import Graph
from .parts import Band, BlockLayout, Globals, RowIndex

__all__ = ["BigBird"]

#: The official script's 1..5 random blocks and the talk slides' {2, 4, …, 20}.
_RANDOM = [1, 2, 3, 4, 5, *range(6, 21, 2)]


@lru_cache(maxsize=8192)
def _random_blocks(seed: int, r: int, official_plan: bool, nb: int, head: int) -> Tensor:
    """Random key blocks ``(nb, r)`` of each row block (``-1`` where none).

    A pure function of its arguments (the draw is seeded by ``seed``, ``head`` and ``nb``), so
    it is cached: configurations that differ only in predict-time options share the draws.
    """
    g = torch.Generator()
    g.manual_seed(hash((seed, head, nb)) & 0x7FFFFFFF)
    scores = torch.rand(nb, nb, generator=g)
    i = torch.arange(nb).view(-1, 1)
    j = torch.arange(nb).view(1, -1)
    inner = (i > 0) & (i < nb - 1) & (j > 0) & (j < nb - 1)
    allowed = inner & ((j - i).abs() > 1)
    if official_plan and nb > 2 * r + 5:
        allowed &= j <= 2 * r + 3
        allowed &= ~(((i == 1) & (j == 2 * r + 3)) | ((i == 2 * r + 3) & (j == 1)))
    elif official_plan and nb <= r + 5:
        allowed &= ~(((i == 1) & (j == nb - 2)) | ((i == nb - 2) & (j == 1)))
    scores = torch.where(allowed, scores, -1.0)
    kk = min(r, nb)
    vals, idx = scores.topk(kk, dim=-1)
    idx = torch.where(vals >= 0, idx, -1)
    if kk < r:
        idx = torch.cat([idx, torch.full((nb, r - kk), -1, dtype=torch.long)], dim=-1)
    return idx


@register("bigbird")
@dataclass(kw_only=True)
class BigBird(Composable):
    """BigBird's ITC pattern: a 3-block window, global first/last blocks and random blocks.

    Paper: Zaheer et al., "Big Bird: Transformers for Longer Sequences", NeurIPS 2020
    (arXiv:2007.14062), as simulated by the Sparsefinder baselines (Treviso et al.,
    arXiv:2109.12188). Each query block ``i`` keeps key blocks ``i-1, i, i+1``; the first and
    the last block are global (full rows and columns); every other row block also keeps
    ``num_random`` key blocks drawn uniformly without replacement from the blocks outside its
    window and outside the global blocks (fewer when not enough remain). ``block_size=1`` is the
    paper's token-level setting (a band, global tokens and per-row key lists); a larger block
    size gives a :class:`BlockLayout`.

    Deviations and switches:

    * By default the sequence is each sequence's real length: the last global block holds the
      last real token and random blocks are drawn among real blocks. The official code uses the
      padded batch length, so shorter sequences lose their last global token (bug B7) and the
      pattern depends on the batch composition (B8); ``official_padded_length=True`` does that.
    * Random blocks are drawn per head from ``seed``; the draw depends on the number of blocks
      only, so sequences of equal length share a pattern (as all items of a batch do in the
      official code) and results do not depend on batch order.
    * ``official_plan=True`` reproduces the official "plan" of the random blocks. When the
      sequence has more than ``2r + 5`` blocks, every row's random blocks come from the first
      plan segment ``[0, 2r + 5)``: blocks ``1 .. 2r + 3`` (its first and last block are
      excluded as globals), and the official row routine also forbids the block ``2r + 3``
      (its ``to_end - 2``) to row block 1 and block 1 to row block ``2r + 3``. With at most
      ``r + 5`` blocks the plan is one segment, the whole sequence, and the same routine
      forbids block ``nb - 2`` to row block 1 and block 1 to row block ``nb - 2``. The
      official split of the lengths in between into two segments is not copied (the whole
      sequence is used there, without that rule).

    Attributes:
        num_random: random key blocks per query block (r); 0 keeps the window and globals.
        block_size: tokens per block (b); 1 = token level.
        official_padded_length: use the padded length for globals and random draws (B7, B8).
        official_plan: draw random blocks by the official plan and row routine.
    """

    num_random: int = param(3, min=0)
    block_size: int = param(1, min=1)
    official_padded_length: bool = False
    official_plan: bool = False
    tags: ClassVar[Tags] = Tags(stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"num_random": _RANDOM, "window": MT_WINDOWS},
        "paper_mlm": {"num_random": _RANDOM, "window": MLM_WINDOWS},
        "quick": {"num_random": [1, 3]},
    }

    def _random_blocks(self, nb: int, head: int) -> Tensor:
        """Random key blocks ``(nb, r)`` of each row block (``-1`` where none)."""
        return _random_blocks(self.seed, self.num_random, self.official_plan, nb, head)

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        b, r = self.block_size, self.num_random
        if lengths is None or self.official_padded_length:
            L = torch.full((B,), min(N, M), dtype=torch.long)
        else:
            L = lengths
        nbs = [-(-int(x) // b) for x in L.tolist()]  # blocks per sequence
        cache: dict[tuple[int, int], Tensor] = {}

        def rand(nb: int, h: int) -> Tensor:
            if (nb, h) not in cache:
                cache[(nb, h)] = self._random_blocks(nb, h)
            return cache[(nb, h)]

        if b == 1:
            index = torch.full((B, H, N, max(r, 1)), -1, dtype=torch.long)
            for s, nb in enumerate(nbs):
                for h in range(H):
                    if nb > 0 and r > 0:
                        index[s, h, :nb, :r] = rand(nb, h)
            positions = torch.stack([torch.zeros_like(L), L - 1], dim=1)
            positions = torch.where(L.view(-1, 1) > 0, positions, -1)  # (B, 2)
            return Graph((B, H, N, M), [Band(-1, 1), Globals(positions), RowIndex(index)])

        NB, MB = -(-N // b), -(-M // b)
        blocks = torch.zeros(B, H, NB, MB, dtype=torch.bool)  # (B, H, N/b, M/b)
        for s, nb in enumerate(nbs):
            if nb == 0:
                continue
            i = torch.arange(nb).view(-1, 1)
            j = torch.arange(nb).view(1, -1)
            base = ((j - i).abs() <= 1) | (i == 0) | (j == 0) | (i == nb - 1) | (j == nb - 1)
            for h in range(H):
                pat = base.clone()
                if r > 0:
                    idx = rand(nb, h)  # (nb, r)
                    ok = idx >= 0
                    rows = torch.arange(nb).view(-1, 1).expand_as(idx)
                    pat[rows[ok], idx[ok]] = True
                nq, nk = min(nb, NB), min(nb, MB)
                blocks[s, h, :nq, :nk] = pat[:nq, :nk]
        return Graph((B, H, N, M), [BlockLayout(blocks, b)])
