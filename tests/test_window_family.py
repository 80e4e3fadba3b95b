"""Window families: configurations that differ only in their window, scored from one base.

Every figure of every member must equal what scoring the member alone gives.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sparsebench import datasets, methods
from sparsebench.bench.evaluate import evaluate_layer
from sparsebench.bench.runs.runner import FitStore
from sparsebench.bench.window_family import entry_width, evaluate_family, family_key
from sparsebench.methods import window_band


def test_entry_width_is_the_smallest_band_holding_each_offset():
    for d in range(-15, 16):
        inside = [
            w for w in range(1, 40) if (b := window_band(w)) is not None and b.lo <= d <= b.hi
        ]
        assert int(entry_width(torch.tensor(d))) == min(inside)
        assert all(w in inside for w in range(min(inside), 40))  # bands only grow


def padded(data):
    """The data with some sequences shorter than the batch (padding inside a batch)."""
    lengths = data.lengths.clone()
    lengths[::3] = (lengths[::3] * 2) // 3
    return dataclasses.replace(data, lengths=lengths)


def assert_same(a: dict, b: dict, name: str):
    for key in ("recall", "sparsity", "exact", "precision", "gold_sparsity", "block_sparsity"):
        assert a[key] == b[key] or (math.isnan(a[key]) and math.isnan(b[key])), (name, key)
    assert a["mass_recall"] == pytest.approx(b["mass_recall"], rel=1e-12, nan_ok=True), name
    assert a["output_error"] == pytest.approx(b["output_error"], rel=1e-5, abs=1e-7), name
    for key, va in a["per_sequence"].items():
        vb = b["per_sequence"][key]
        tol = 1e-5 if key == "output_error" else 1e-12
        assert torch.allclose(
            torch.as_tensor(va), torch.as_tensor(vb), rtol=tol, atol=1e-7, equal_nan=True
        ), (name, key)
    assert a["by_length"].keys() == b["by_length"].keys()
    assert a["sequence_lengths"] == b["sequence_lengths"]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "spec",
    [
        "sparsefinder_quantize:num_buckets=4",
        "bigbird:num_random=1,block_size=4,global_tokens=1",
        "sparsefinder_kmeans:num_clusters=3",
        "openai_fixed:stride=8",
    ],
)
def test_family_members_equal_their_own_scores(causal, spec):
    data = padded(
        datasets.synthetic(num_seqs=10, layers=1, heads=2, n=48, d=16, causal=causal, seed=5)
    )
    if causal and not methods.get(spec.split(":")[0]).tags.supports_causal:
        pytest.skip("not causal")
    fits = FitStore(data)
    target = data.split("eval")
    windows = [0, 1, 2, 3, 4, 7, 27]
    name, params = methods.parse_spec(spec)
    members = []
    for w in windows:
        m = methods.create(name, **params, window=w).for_data(data)
        members.append(fits.fitted(m, 0) if m.learns else m)
    assert len({family_key(m) for m in members}) == 1
    kw = {"batch_size": 4, "block_size": 8, "gold_cache": {}, "longest": int(data.lengths.max())}
    together = evaluate_family(members, target, 0, predict_cache={}, **kw)
    assert together is not None
    for w, m, res in zip(windows, members, together, strict=True):
        alone = evaluate_layer(m, target, 0, **kw)
        assert_same(res, alone, f"{spec} w={w}")
    # The widest window covers more gold edges than no window at all.
    assert together[-1]["recall"] >= together[0]["recall"]


def test_family_key_separates_what_the_base_prediction_reads():
    a = methods.create("bigbird", num_random=2, window=3)
    assert family_key(a) == family_key(methods.create("bigbird", num_random=2, window=9))
    assert family_key(a) != family_key(methods.create("bigbird", num_random=3, window=3))
    assert family_key(a) != family_key(methods.create("bigbird", num_random=2, global_tokens=1))
    assert family_key(methods.create("window", w=3)) is None
