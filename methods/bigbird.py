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
#: Token level (the Sparsefinder simulation) and two blocked variants. The paper's block of 64
#: suits its 4096-token inputs; the bundled sequences hold about 256 tokens (16 to 32 blocks).
_BLOCKS = [1, 8, 16]
#: Random scores drawn at a time (16 MB of float32), so a draw never holds ``nb × nb`` scores.
_DRAW_ELEMENTS = 1 << 22


def _forbid(scores: Tensor, start: int, nb: int, r: int, official_plan: bool) -> None:
    """Set to -1, in place, the scores of key blocks that row blocks ``start ..`` may not draw.

    Those are the global blocks (first and last: their rows and columns), each row's window
    (``i-1, i, i+1``) and, with ``official_plan``, what the official plan rules out. Only
    ``O(rows)`` entries are written, never a mask of the slab.
    """
    rows = scores.shape[0]
    i = torch.arange(start, start + rows)
    slot = torch.arange(rows)
    scores[:, [0, nb - 1]] = -1.0
    scores[(i == 0) | (i == nb - 1)] = -1.0
    for off in (-1, 0, 1):
        j = i + off
        ok = (j >= 0) & (j < nb)
        scores[slot[ok], j[ok]] = -1.0
    if official_plan and nb > 2 * r + 5:
        scores[:, 2 * r + 4 :] = -1.0
        pairs = [(1, 2 * r + 3), (2 * r + 3, 1)]
    elif official_plan and nb <= r + 5:
        pairs = [(1, nb - 2), (nb - 2, 1)]
    else:
        pairs = []
    for row, col in pairs:
        if start <= row < start + rows and 0 <= col < nb:
            scores[row - start, col] = -1.0


@lru_cache(maxsize=8192)
def _random_blocks(
    seed: int, r: int, official_plan: bool, nb: int, head: int, rows_per_slab: int | None = None
) -> Tensor:
    """Random key blocks ``(nb, r)`` of each row block (``-1`` where none).

    Each row block scores every key block with a uniform draw and keeps its ``r`` best allowed
    ones. The scores are drawn a slab of rows at a time, in row order from one generator, so the
    draw equals that of the whole ``(nb, nb)`` matrix at once while holding ``rows_per_slab ×
    nb`` scores (default: :data:`_DRAW_ELEMENTS`). A pure function of its arguments (seeded by
    ``seed``, ``head`` and ``nb``), so it is cached: configurations that differ only in
    predict-time options share the draws.
    """
    g = torch.Generator()
    g.manual_seed(hash((seed, head, nb)) & 0x7FFFFFFF)
    kk = min(r, nb)
    out = torch.full((nb, r), -1, dtype=torch.long)
    rows = rows_per_slab or max(1, _DRAW_ELEMENTS // max(1, nb))
    for start in range(0, nb, rows):
        stop = min(nb, start + rows)
        scores = torch.rand(stop - start, nb, generator=g)  # (rows, nb)
        _forbid(scores, start, nb, r, official_plan)
        vals, idx = scores.topk(kk, dim=-1)
        out[start:stop, :kk] = torch.where(vals >= 0, idx, -1)
    return out


@register("bigbird")
@dataclass(kw_only=True)
class BigBird(Composable):
    """BigBird's ITC pattern: a 3-block window, global first/last blocks and random blocks.

    Paper: Zaheer et al., "Big Bird: Transformers for Longer Sequences", NeurIPS 2020
    (arXiv:2007.14062), as simulated by the Sparsefinder baselines (Treviso et al.,
    arXiv:2109.12188). Tokens are grouped in blocks of ``block_size`` (b). Each query block
    ``i`` keeps key blocks ``i-1, i, i+1``; the first and the last block are global (full rows
    and columns); every other row block also keeps ``num_random`` key blocks drawn uniformly
    without replacement from the blocks outside its window and outside the global blocks (fewer
    when not enough remain).

    ``block_size=1`` is the token-level setting of the Sparsefinder simulation: a band, two
    global tokens and per-row key lists (:class:`RowIndex`). A larger ``b`` is the paper's
    blocked form (its practical implementation, b = 64 on long inputs), emitted as one
    :class:`BlockLayout` of ``b × b`` blocks per sequence and head: every pair inside a kept
    block is an edge (within the valid pairs), so at a kernel block size of ``b`` the share of
    kernel blocks kept is the graph's density, where the token-level pattern's scattered random
    keys touch most kernel blocks. The grids sweep b ∈ {1, 8, 16}, sizes that leave the bundled
    sequences of about 256 tokens 16 to 32 blocks.

    Cost (``complexity``): every row block scores every key block once, O((N/b)²) time. The
    scores are drawn in row slabs, so memory is the output: the key lists O(N r) at b = 1, the
    block layout O((N/b)²) above.

    Deviations and switches:

    * By default the sequence is each sequence's real length: the last global block holds the
      last real token and random blocks are drawn among real blocks. The official code uses the
      padded batch length, so shorter sequences lose their last global token (bug B7) and the
      pattern depends on the batch composition (B8); ``official_padded_length=True`` does that.
    * Random blocks are drawn per head from ``seed``; the draw depends on the number of blocks
      only, so sequences of equal length share a pattern (as all items of a batch do in the
      official code) and results do not depend on batch order. In a decoder the draws are the
      same and the causal mask then removes the future blocks.
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
        block_size: tokens per block (b); 1 = token level, larger = the blocked variant.
        official_padded_length: use the padded length for globals and random draws (B7, B8).
        official_plan: draw random blocks by the official plan and row routine.
    """

    num_random: int = param(3, min=0)
    block_size: int = param(1, min=1)
    official_padded_length: bool = False
    official_plan: bool = False
    tags: ClassVar[Tags] = Tags(stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"num_random": _RANDOM, "block_size": _BLOCKS, "window": MT_WINDOWS},
        "paper_mlm": {"num_random": _RANDOM, "block_size": _BLOCKS, "window": MLM_WINDOWS},
        "quick": {"num_random": [1, 3], "block_size": [1, 16]},
    }
    complexity: ClassVar[dict[str, str]] = {"time": "O((N/b)²)", "memory": "O(N r); b>1: O((N/b)²)"}

    def _random_blocks(self, nb: int, head: int) -> Tensor:
        """Random key blocks ``(nb, r)`` of each row block (``-1`` where none)."""
        return _random_blocks(self.seed, self.num_random, self.official_plan, nb, head)

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        if lengths is None or self.official_padded_length:
            L = torch.full((B,), min(N, M), dtype=torch.long)
        else:
            L = lengths
        nbs = [-(-int(x) // self.block_size) for x in L.tolist()]  # blocks per sequence
        if self.block_size == 1:
            return self._token_graph((B, H, N, M), L, nbs)
        return self._block_graph((B, H, N, M), nbs)

    def _token_graph(self, shape: tuple[int, int, int, int], L: Tensor, nbs: list[int]) -> Graph:
        """Token level (b = 1): a band of 3, the first and last real token, random key lists."""
        B, H, N, _ = shape
        r = self.num_random
        index = torch.full((B, H, N, max(r, 1)), -1, dtype=torch.long)
        for s, nb in enumerate(nbs):
            for h in range(H):
                if nb > 0 and r > 0:
                    index[s, h, :nb, :r] = self._random_blocks(nb, h)
        positions = torch.stack([torch.zeros_like(L), L - 1], dim=1)
        positions = torch.where(L.view(-1, 1) > 0, positions, -1)  # (B, 2)
        return Graph(shape, [Band(-1, 1), Globals(positions), RowIndex(index)])

    def _block_graph(self, shape: tuple[int, int, int, int], nbs: list[int]) -> Graph:
        """Blocked (b > 1): the kept ``b × b`` blocks of each sequence and head, one layout."""
        B, H, N, M = shape
        b = self.block_size
        NB, MB = -(-N // b), -(-M // b)
        blocks = torch.zeros(B, H, NB, MB, dtype=torch.bool)  # (B, H, N/b, M/b)
        for s, nb in enumerate(nbs):
            if nb == 0:
                continue
            i = torch.arange(nb).view(-1, 1)
            j = torch.arange(nb).view(1, -1)
            base = ((j - i).abs() <= 1) | (i == 0) | (j == 0) | (i == nb - 1) | (j == nb - 1)
            nq, nk = min(nb, NB), min(nb, MB)
            for h in range(H):
                pat = base.clone()  # (nb, nb)
                if self.num_random > 0:
                    idx = self._random_blocks(nb, h)  # (nb, r)
                    ok = idx >= 0
                    rows = torch.arange(nb).view(-1, 1).expand_as(idx)
                    pat[rows[ok], idx[ok]] = True
                blocks[s, h, :nq, :nk] = pat[:nq, :nk]
        return Graph(shape, [BlockLayout(blocks, b)])
