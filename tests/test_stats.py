"""Bootstrap intervals against hand-computed resamples, and the records they are computed from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparsebench.bench.stats import (
    bootstrap_indices,
    macro_interval,
    paired_ratio_delta_interval,
    ratio_interval,
)

# Five fixed resamples of four items. With level 0.5 the bounds are the 25th and 75th
# percentiles of five statistics: exactly the 2nd and the 4th smallest.
INDEX = np.array([[0, 1, 2, 3], [0, 0, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [0, 1, 3, 3]])


def test_macro_interval_by_hand_with_a_missing_value():
    values = [[0.1, 0.2, None, 0.4], [0.5, 0.6, 0.7, 0.8]]  # (layers, sequences)
    # Per resample: mean over sequences of each layer (the missing value left out), then over
    # layers (a layer with no value in the resample left out):
    #   [0,1,2,3]: (0.7/3 + 0.65) / 2 = 0.441667    [0,0,1,1]: (0.15 + 0.55) / 2 = 0.35
    #   [2,2,2,2]: layer 0 has no value -> 0.7       [3,3,3,3]: (0.4 + 0.8) / 2 = 0.6
    #   [0,1,3,3]: (0.275 + 0.675) / 2 = 0.475
    # Sorted: 0.35, 0.441667, 0.475, 0.6, 0.7.
    lo, hi = macro_interval(values, index=INDEX, level=0.5)
    assert lo == pytest.approx((0.7 / 3 + 0.65) / 2)
    assert hi == pytest.approx(0.6)


def test_ratio_interval_by_hand():
    nums, dens = [1, 2, 3, 4], [10, 10, 20, 20]
    # Σnum / Σden per resample: 10/60, 6/40, 12/80, 16/80, 11/60
    # sorted: 0.15, 0.15, 0.1667, 0.1833, 0.2
    assert ratio_interval(nums, dens, index=INDEX, level=0.5) == pytest.approx((0.15, 11 / 60))


def test_paired_delta_by_hand():
    a, ref, dens = [1, 2, 3, 4], [2, 2, 2, 2], [10, 10, 10, 10]
    # (Σa - Σref) / Σd per resample: 2/40, -2/40, 4/40, 8/40, 3/40
    # sorted: -0.05, 0.05, 0.075, 0.1, 0.2
    lo, hi = paired_ratio_delta_interval(a, ref, dens, index=INDEX, level=0.5)
    assert (lo, hi) == pytest.approx((0.05, 0.1))


def test_the_paired_delta_cancels_what_both_share():
    # Windows differ a lot in difficulty, and the method is always 0.01 below the reference:
    # the paired interval of the difference is that constant, the unpaired spread is wide.
    rng = np.random.default_rng(0)
    tokens = np.full(50, 100.0)
    ref = rng.uniform(20, 80, size=50)
    method = ref - 1.0
    lo, hi = paired_ratio_delta_interval(method, ref, tokens, seed=1)
    assert lo == pytest.approx(-0.01) and hi == pytest.approx(-0.01)
    a_lo, a_hi = ratio_interval(method, tokens, seed=1)
    assert a_hi - a_lo > 0.02


def test_an_interval_contains_the_point_estimate_of_a_symmetric_case():
    rng = np.random.default_rng(3)
    values = rng.normal(0.6, 0.05, size=(2, 200))
    point = float(np.mean(values.mean(axis=1)))
    lo, hi = macro_interval(values, seed=5)
    assert lo < point < hi
    assert hi - lo < 0.05  # about 4 standard errors of a mean of 200 draws


def test_a_resample_keeps_a_sequences_layers_together():
    # Layer 1 mirrors layer 0, so every sequence's mean over layers is 0.5 and so is every
    # resample's figure, if (and only if) each resample takes a sequence's layers together.
    rng = np.random.default_rng(7)
    first = rng.uniform(0, 1, size=30)
    lo, hi = macro_interval(np.stack([first, 1 - first]), seed=2)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    # Each layer on its own does vary across the same resamples.
    lo0, hi0 = macro_interval(first, seed=2)
    assert hi0 - lo0 > 0.1


def test_bootstrap_indices_and_given_indices_are_checked():
    idx = bootstrap_indices(4, reps=7, seed=0)
    assert idx.shape == (7, 4) and idx.min() >= 0 and idx.max() < 4
    assert np.array_equal(idx, bootstrap_indices(4, reps=7, seed=0))
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_indices(0)
    with pytest.raises(ValueError, match="shape"):
        macro_interval([[0.1, 0.2]], index=np.zeros((3, 5), dtype=int))
    with pytest.raises(ValueError, match="integers in 0 .. 1"):
        ratio_interval([1, 2], [1, 1], index=np.array([[0, 2]]))
    with pytest.raises(ValueError, match="same windows"):
        paired_ratio_delta_interval([1, 2], [1], [1, 1])


def test_all_missing_gives_no_interval():
    lo, hi = macro_interval([[None, None, None]], reps=10)
    assert math.isnan(lo) and math.isnan(hi)


# -- what the records keep -----------------------------------------------------------------


def _sweep_records(tmp_path, data, methods="window"):
    from sparsebench.bench.runs import read_records, sweep

    out = tmp_path / "r.jsonl"
    sweep(data, out, methods=methods, grid="quick", batch_size=3, progress=False, log=print)
    return read_records(out)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from sparsebench import datasets

    # Eval sequences of 34 to 269 tokens in two batches of three, in all three length bins.
    data = datasets.synthetic(
        num_seqs=12,
        layers=2,
        heads=2,
        n=300,
        d=8,
        causal=True,
        seed=2,
        min_length=20,
        eval_fraction=0.5,
    )
    assert data.split("eval").lengths.tolist() == [142, 269, 235, 66, 121, 34]
    return data, _sweep_records(tmp_path_factory.mktemp("sweep"), data)


def test_per_sequence_values_reproduce_the_records_figures(records):
    from sparsebench.bench.breakdown import PER_SEQUENCE

    data, recs = records
    ev = data.split("eval")
    for r in recs:
        assert r["sequence_lengths"] == ev.lengths.tolist()
        assert set(r["per_sequence"]) == set(PER_SEQUENCE)
        for name, values in r["per_sequence"].items():
            assert len(values) == len(ev)
            # No head lacks a value here, so the mean over sequences of each sequence's mean
            # over heads is the paper's mean over sequences, then heads (up to the rounding).
            assert None not in values, (r["method_id"], name)
            assert np.mean(values) == pytest.approx(r[name], rel=1e-5, abs=1e-6), name
            assert all(v == float(f"{v:.6g}") for v in values)  # 6 significant digits
    # The interval of a configuration brackets its layer-averaged figure.
    by_config: dict[str, list] = {}
    for r in recs:
        by_config.setdefault(r["method_id"], []).append(r)
    for rows in by_config.values():
        point = np.mean([r["recall"] for r in rows])
        lo, hi = macro_interval([r["per_sequence"]["recall"] for r in rows], seed=0)
        assert lo - 1e-6 <= point <= hi + 1e-6


def test_length_bins_partition_the_sequences(records):
    from sparsebench.bench.breakdown import length_bins

    data, recs = records
    longest = int(data.lengths.max())  # of the whole dataset, not only of the eval split
    labels = [f"{lo}-{hi}" for lo, hi in length_bins(longest)]
    assert labels[0] == "0-128" and len(labels) == -(-longest // 128)
    for r in recs:
        bins = r["by_length"]
        assert list(bins) == labels
        lengths = r["sequence_lengths"]
        assert sum(b["num_sequences"] for b in bins.values()) == len(lengths)
        for label, b in bins.items():
            lo, hi = map(int, label.split("-"))
            inside = [i for i, n in enumerate(lengths) if lo < n <= hi]
            assert b["num_sequences"] == len(inside)
            for name in ("recall", "sparsity", "output_error"):
                if not inside:
                    assert b[name] is None
                    continue
                mean = np.mean([r["per_sequence"][name][i] for i in inside])
                assert b[name] == pytest.approx(mean, rel=1e-5, abs=1e-6), (label, name)
    assert [b["num_sequences"] for b in recs[0]["by_length"].values()] == [3, 2, 1]


def test_output_error_equals_a_direct_computation(records):
    import torch

    from sparsebench import methods
    from sparsebench.bench import output_error
    from sparsebench.bench.metrics import macro_average

    data, recs = records
    ev = data.split("eval")
    for r in recs:
        pred_method = methods.create(r["method"], **r["params"])
        per = []
        for b in ev.batches(r["layer"], 3):  # the sweep's batches
            pred = pred_method.predict(b.q, b.k, lengths=b.lengths, causal=True)
            direct = output_error(b.q, b.k, b.v, pred, data.alpha, lengths=b.lengths, causal=True)
            per.append(direct["per_sequence"]["output_error"])
        # The sweep solves only the rows that miss gold, as key lists: equal to float32 rounding.
        direct = macro_average(torch.cat(per))[0]
        assert r["output_error"] == pytest.approx(direct, rel=1e-6), r["method_id"]
    assert len({r["output_error"] for r in recs}) > 2  # the windows really differ


def test_data_without_values_has_no_output_error(tmp_path):
    from sparsebench import datasets

    data = datasets.synthetic(num_seqs=8, layers=1, heads=2, n=24, d=8, seed=0)
    data.v = None
    for r in _sweep_records(tmp_path, data):
        assert math.isnan(r["output_error"])
        assert r["per_sequence"]["output_error"] == [None] * len(data.split("eval"))
        assert r["per_sequence"]["recall"][0] is not None
