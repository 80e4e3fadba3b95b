from __future__ import annotations

import pytest
import torch

from sparsebench import datasets


@pytest.fixture(scope="session")
def syn_bidir():
    return datasets.synthetic(num_seqs=8, layers=2, heads=3, n=40, d=16, causal=False, seed=1)


@pytest.fixture(scope="session")
def syn_causal():
    return datasets.synthetic(num_seqs=8, layers=2, heads=3, n=40, d=16, causal=True, seed=2)


def dense_valid(B, N, lengths=None, causal=False):
    """Reference validity mask (B, 1, N, N) built the obvious way."""
    valid = torch.zeros(B, 1, N, N, dtype=torch.bool)
    for b in range(B):
        L = N if lengths is None else int(lengths[b])
        for i in range(L):
            for j in range(L):
                if not causal or j <= i:
                    valid[b, 0, i, j] = True
    return valid
