"""Reformer: angular LSH buckets, as an ideal same-bucket graph or as sort-and-chunk executes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import MLM_WINDOWS, MT_WINDOWS, Grid, Tags, param, predict_time
from ._learned import LearnedSpace
from ._masks import real_tokens
from ._registry import register
from .graph import Graph
from .parts import Groups

__all__ = ["Reformer", "lsh_buckets"]

#: The talk slides' buckets {2, 4, …, 20} and the official script's 22, 26, 30 beyond them.
_MT_BUCKETS = [*range(2, 21, 2), 22, 26, 30]


def lsh_buckets(x: Tensor, rotations: Tensor) -> Tensor:
    """Angular LSH bucket ids: ``argmax([x R ; -x R])``.

    Args:
        x: vectors ``(..., D)``.
        rotations: ``(D, n_buckets // 2)``.

    Returns:
        ``(...)`` int64 bucket ids in ``[0, n_buckets)``.
    """
    proj = x @ rotations
    return torch.cat([proj, -proj], dim=-1).argmax(-1)


@register("reformer")
@dataclass(kw_only=True)
class Reformer(LearnedSpace):
    """Angular LSH attention: tokens attend within their hash bucket, over ``n_hashes`` rounds.

    Paper: Kitaev et al., "Reformer: The Efficient Transformer", ICLR 2020 (arXiv:2001.04451),
    as a Sparsefinder baseline (Treviso et al., arXiv:2109.12188). Each round and head draws a
    Gaussian rotation ``R`` of shape ``(D, n_buckets/2)`` from ``seed``; a vector's bucket is
    ``argmax([xR ; -xR])``. Rotations are fixed per (head, round) and reused for every batch.

    ``vectors`` chooses what is hashed:

    * ``"separate"`` (default): the L2-normalised query and the L2-normalised key of each token
      are hashed with the same rotations, as a real shared-QK Reformer hashes its shared vector;
      query ``i`` and key ``j`` meet when their buckets agree. With ``q == k`` this is exactly
      shared-QK LSH and the graph is symmetric.
    * ``"concat"``: the official simulation hashes each token's concatenation ``[q_i ; k_i]`` once
      and uses that bucket for the token as query and as key (a symmetric graph).

    ``graph`` chooses which graph is predicted:

    * ``"ideal"`` (default, what the paper scores): an edge when query and key share a bucket in
      any round. No sorting or chunking, no self-exclusion, as in the official simulation.
    * ``"executed"``: what a sort-and-chunk implementation computes. Per round, queries and keys
      are each stably sorted by (bucket, position), split into chunks of ``chunk_size`` in that
      order, and each query chunk attends its own key chunk and the one before (look-one-back;
      the first chunk looks back to the last chunk of the same round). Union over rounds.

    Deviations: rotations are drawn once from ``seed`` instead of per batch from the global RNG
    (bug B17); padding tokens get no bucket instead of an extra one. Buckets are computed on the
    raw head vectors by default (``space="raw"``, what the leaderboard uses);
    ``space="projected"`` hashes the learned Sparsefinder projections as the official code does.

    Cost: R = ``n_hashes`` rounds of C = ``n_buckets`` buckets; the executed graph's sort adds
    the ``log N`` term. Memory holds the normalised vectors and one round's projections.

    Attributes:
        n_buckets: buckets per round (even).
        n_hashes: hash rounds.
        vectors: ``"separate"`` or ``"concat"`` (official).
        graph: ``"ideal"`` or ``"executed"``.
        chunk_size: tokens per chunk for the executed graph; ``None`` = ``ceil(L / n_buckets)``
            for a sequence of length ``L``.
    """

    n_buckets: int = param(8, min=2)
    n_hashes: int = param(1, min=1)
    vectors: Literal["separate", "concat"] = "separate"
    graph: Literal["ideal", "executed"] = predict_time("ideal")
    chunk_size: int | None = predict_time(None, min=1)
    tags: ClassVar[Tags] = Tags(stochastic=True)
    grid: ClassVar[Grid] = {
        "paper": {"n_buckets": _MT_BUCKETS, "window": MT_WINDOWS},
        "paper_mlm": {"n_buckets": [*_MT_BUCKETS, 40, 50, 100], "window": MLM_WINDOWS},
        "quick": {"n_buckets": [2, 8, 30]},
    }
    complexity: ClassVar[dict[str, str]] = {
        "time": "O(N R (d C + log N))",
        "memory": "O(N (d + C + R))",
    }

    def _check_values(self) -> None:
        if self.n_buckets % 2:
            raise ValueError(
                f"method 'reformer': n_buckets must be even (buckets come in ± pairs), "
                f"got {self.n_buckets}"
            )

    def buckets(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Bucket ids of queries ``(B, H, N, n_hashes)`` and keys ``(B, H, M, n_hashes)``."""
        self.validate()
        B, H, N, D = q.shape
        if self.vectors == "concat":
            if k.shape[2] != N:
                raise ValueError("vectors='concat' needs as many keys as queries")
            xq = xk = torch.cat([q, k], dim=-1)  # (B, H, N, 2D)
        else:
            xq, xk = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1)
        dim = xq.shape[-1]
        qb, kb = [], []
        for r in range(self.n_hashes):
            rot = torch.stack(
                [
                    torch.randn(dim, self.n_buckets // 2, generator=self._generator(h, r))
                    for h in range(H)
                ]
            )  # (H, dim, n_buckets/2)
            qb.append(lsh_buckets(xq.float(), rot))  # (B, H, N)
            kb.append(lsh_buckets(xk.float(), rot))
        return torch.stack(qb, dim=-1), torch.stack(kb, dim=-1)

    def _predict(self, q: Tensor, k: Tensor, *, lengths, causal) -> Graph:
        B, H, N, _ = q.shape
        M = k.shape[2]
        q, k = self._to_space(q, k)
        qb, kb = self.buckets(q, k)  # (B, H, N, R), (B, H, M, R)
        Lq = lengths if lengths is not None else torch.full((B,), N, dtype=torch.long)
        Lk = lengths if lengths is not None else torch.full((B,), M, dtype=torch.long)
        q_real = real_tokens(Lq, B, N).view(B, 1, N, 1)
        k_real = real_tokens(Lk, B, M).view(B, 1, M, 1)
        qb = torch.where(q_real, qb, -1)
        kb = torch.where(k_real, kb, -1)
        if self.graph == "ideal":
            return Graph((B, H, N, M), [Groups(qb, kb, "slot")])
        L = torch.minimum(Lq, Lk)
        if self.chunk_size is None:
            cs = ((L + self.n_buckets - 1) // self.n_buckets).clamp(min=1)
        else:
            cs = torch.full((B,), self.chunk_size, dtype=torch.long)
        qc, q_chunks = _sorted_chunks(qb, cs)
        kc, _ = _sorted_chunks(kb, cs)
        k_chunks = ((Lk + cs - 1) // cs).clamp(min=1)
        nch = torch.maximum(q_chunks, k_chunks).view(B, 1, 1, 1)
        back = torch.where(qc >= 0, (qc - 1) % nch, -1)
        # Slot pairs per round: (own chunk, key chunk) and (previous chunk, key chunk).
        q_groups = torch.cat([qc, back], dim=-1)  # (B, H, N, 2R)
        k_groups = torch.cat([kc, kc], dim=-1)  # (B, H, M, 2R)
        return Graph((B, H, N, M), [Groups(q_groups, k_groups, "slot")])


def _sorted_chunks(buckets: Tensor, chunk_size: Tensor) -> tuple[Tensor, Tensor]:
    """Chunk id of each token after a stable sort by (bucket, position), per round.

    Args:
        buckets: ``(B, H, N, R)`` bucket ids, ``-1`` for padding (which sorts last).
        chunk_size: ``(B,)`` tokens per chunk.

    Returns:
        Chunk ids ``(B, H, N, R)`` (``-1`` for padding) and the chunk count per sequence ``(B,)``.
    """
    B, H, N, R = buckets.shape
    big = int(buckets.max()) + 1 if buckets.numel() else 1
    key = torch.where(buckets >= 0, buckets, big) * N + torch.arange(N).view(1, 1, N, 1)
    order = key.argsort(dim=2)  # keys are distinct: the order is the stable one
    rank = torch.empty_like(order)
    rank.scatter_(2, order, torch.arange(N).view(1, 1, N, 1).expand_as(order))
    chunks = rank // chunk_size.view(B, 1, 1, 1)
    real = (buckets >= 0).sum(2).amax((1, 2))  # (B,)
    count = (real + chunk_size - 1) // chunk_size
    return torch.where(buckets >= 0, chunks, -1), count
