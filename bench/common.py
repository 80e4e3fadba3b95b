"""Shared pieces of the asv suites: seeded inputs and fitted methods, cached per process."""

from __future__ import annotations

from functools import lru_cache

#: Each method's default configuration (plus a wider window), as asv parameters.
SUITE_METHODS = [
    "window",
    "window:w=65,global_tokens=2",
    "bigbird",
    "longformer",
    "openai_fixed",
    "reformer",
    "routing",
    "dsa",
    "sparsefinder_distance",
    "sparsefinder_quantize",
    "sparsefinder_kmeans",
    "sparsefinder_blocks",
    "topk_oracle",
]
HEADS, DIM = 8, 64


@lru_cache(maxsize=8)
def inputs(n: int, heads: int = HEADS, dim: int = DIM):
    """Seeded generator q, k, v ``(1, heads, n, dim)``."""
    from sparsebench.datasets import synthetic

    lay = synthetic(num_seqs=1, layers=1, heads=heads, n=n, d=dim, min_length=n, seed=0).layer(0)
    return lay.q, lay.k, lay.v


@lru_cache(maxsize=32)
def fitted(spec: str, heads: int = HEADS, dim: int = DIM):
    """A method fitted (when it learns) on seeded generator data of the same heads and dim."""
    from sparsebench.datasets import synthetic
    from sparsebench.methods import from_spec

    m = from_spec(spec)
    if m.learns:
        train = synthetic(num_seqs=8, layers=1, heads=heads, n=256, d=dim, seed=1)
        m = m.fit(train.split("train"), 0)
    return m
