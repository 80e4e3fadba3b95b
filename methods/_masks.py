"""Which tokens and (query, key) pairs are valid: the one place that builds these masks.

A token is real when its position is below its sequence's length; a pair is valid when both
tokens are real and, for causal attention, the key does not lie after the query. Every module
that needs padding or causality asks here, so the rule is written once.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_lengths", "real_tokens", "valid_pairs"]


def as_lengths(lengths, batch: int, bound: int | None = None) -> Tensor | None:
    """Normalise ``lengths`` to a CPU int64 ``(batch,)`` tensor (``None`` stays ``None``).

    Raises:
        ValueError: when the lengths are not integers, do not have one entry per sequence, or
            (with ``bound``) fall outside ``[0, bound]``.
    """
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dim() > 1:
        raise ValueError(
            f"lengths must be an int tensor of shape ({batch},), got {lengths.dtype} "
            f"{tuple(lengths.shape)}"
        )
    lengths = lengths.reshape(-1).to(torch.long).cpu()
    if lengths.shape[0] != batch:
        raise ValueError(f"lengths has {lengths.shape[0]} entries for a batch of {batch}")
    if bound is not None and ((lengths < 0).any() or (lengths > bound).any()):
        raise ValueError(f"lengths must lie in [0, {bound}], got {lengths.tolist()}")
    return lengths


def real_tokens(lengths: Tensor | None, batch: int, n: int, device=None) -> Tensor:
    """Bool ``(batch, n)``: position below the sequence's length (all true without lengths)."""
    if lengths is None:
        return torch.ones(batch, n, dtype=torch.bool, device=device)
    pos = torch.arange(n, device=device).view(1, n)
    return pos < lengths.to(device).view(batch, 1)


def valid_pairs(
    batch: int,
    n: int,
    m: int,
    lengths: Tensor | None,
    causal: bool,
    device=None,
    rows: tuple[int, int] | None = None,
) -> Tensor:
    """Bool ``(batch | 1, 1, rows, m)`` of valid (query, key) pairs.

    ``rows=(start, stop)`` restricts the queries to that slab (default: all ``n``). Without
    lengths the batch dimension is 1 (it broadcasts); with lengths it is ``batch``.
    """
    start, stop = rows if rows is not None else (0, n)
    i = torch.arange(start, stop, device=device).view(1, 1, -1, 1)
    j = torch.arange(m, device=device).view(1, 1, 1, m)
    if lengths is None:
        ok = torch.ones(1, 1, stop - start, m, dtype=torch.bool, device=device)
    else:
        L = lengths.to(device).view(batch, 1, 1, 1)
        ok = (i < L) & (j < L)
    if causal:
        ok = ok & (j <= i)
    return ok
