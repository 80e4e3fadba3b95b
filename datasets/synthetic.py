"""A small seeded synthetic Q/K generator, for tests and examples only (not for results)."""

from __future__ import annotations

import math

import torch

from sparsebench.methods import real_tokens

from .qkdata import QKData

__all__ = ["synthetic"]


def synthetic(
    *,
    num_seqs: int = 12,
    layers: int = 2,
    heads: int = 4,
    n: int = 64,
    d: int = 16,
    causal: bool = False,
    alpha: float = 1.5,
    seed: int = 0,
    min_length: int | None = None,
    eval_fraction: float = 0.25,
    with_values: bool = True,
) -> QKData:
    """Queries and keys with local and content structure, like a small trained model's.

    Each head mixes a sinusoidal position code (nearby tokens score high, with a head-specific
    reach) with a per-token content vector and noise, and gives the first token a strong key
    (an attention sink), so α-entmax graphs are sparse, local-ish and not trivial. Sequences
    have random lengths in ``[min_length, n]`` (zero-padded); the last ``eval_fraction`` of the
    sequences form the ``eval`` split, the rest ``train``.

    Every step draws from one seeded generator in a fixed order, so the steps stay in one
    function: the same seed must keep giving the same data.
    """
    if num_seqs < 1 or layers < 1 or heads < 1 or n < 1 or d < 2:
        raise ValueError("num_seqs, layers, heads, n must be >= 1 and d >= 2")
    g = torch.Generator().manual_seed(seed)
    min_length = max(1, n // 2 if min_length is None else min_length)
    lengths = torch.randint(min_length, n + 1, (num_seqs,), generator=g)
    lengths[0] = n  # at least one full-length sequence
    pos = torch.arange(n, dtype=torch.float32)
    half = d // 2
    content = torch.randn(num_seqs, n, d, generator=g)
    q = torch.empty(num_seqs, layers, heads, n, d)
    k = torch.empty_like(q)
    for layer in range(layers):
        for h in range(heads):
            reach = 2.0 + 6.0 * (h + layer * heads) / max(1, layers * heads - 1)
            freqs = torch.exp(-torch.arange(half, dtype=torch.float32) / half * math.log(4 * n))
            freqs = freqs / reach * 2
            ang = pos[:, None] * freqs[None, :]
            pe = torch.cat([ang.cos(), ang.sin()], -1)[:, :d]  # (n, d)
            mix = torch.randn(d, d, generator=g) / math.sqrt(d)
            strength = 2.5 + layer
            q[:, layer, h] = (
                strength * pe + content @ mix + 0.3 * torch.randn(num_seqs, n, d, generator=g)
            )
            k[:, layer, h] = (
                strength * pe + content @ mix.T + 0.3 * torch.randn(num_seqs, n, d, generator=g)
            )
            k[:, layer, h, 0] += 1.5 * q[:, layer, h].mean(1)  # sink on the first token
    v = torch.randn(num_seqs, layers, heads, n, d, generator=g) if with_values else None
    pad = ~real_tokens(lengths, num_seqs, n).view(num_seqs, 1, 1, n, 1)
    q = q.masked_fill(pad, 0.0)
    k = k.masked_fill(pad, 0.0)
    if v is not None:
        v = v.masked_fill(pad, 0.0)
    n_eval = max(1, int(round(num_seqs * eval_fraction))) if num_seqs > 1 else 0
    splits = ["train"] * (num_seqs - n_eval) + ["eval"] * n_eval
    meta = {
        "name": f"synthetic-{'causal' if causal else 'bidir'}",
        "model": "synthetic generator (sparsebench.datasets.synthetic), for tests only",
        "text_source": "none (random)",
        "seed": seed,
    }
    return QKData(
        q=q, k=k, v=v, lengths=lengths, causal=causal, alpha=alpha, splits=splits, meta=meta
    )
