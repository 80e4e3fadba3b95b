"""Comparing two runs: same dataset build required, paired intervals, flags, a narrow table."""

from __future__ import annotations

import numpy as np
import pytest

from sparsebench.bench import stats
from sparsebench.bench.report import compare_runs, format_comparison
from sparsebench.bench.runs import append_record

N = 12
RNG = np.random.default_rng(0)
#: Per-sequence spread shared by both runs (the same sequences score alike in both).
BASE = RNG.normal(0.0, 0.05, size=N)


def rec(method, mid, layer, sparsity, recall, shift=0.0, noise=None, dataset_hash="h1"):
    """A sweep record whose per-sequence sparsity is ``sparsity + BASE + shift (+ noise)``."""
    per_s = sparsity + BASE + shift + (0.0 if noise is None else noise)
    return {
        "dataset": "toy",
        "method": method,
        "method_id": mid,
        "layer": layer,
        "sparsity": float(per_s.mean()),
        "recall": recall,
        "exact": recall,
        "gold_sparsity": 0.9,
        "dataset_hash": dataset_hash,
        "sparsebench": "0.1.0",
        "date": "2026-11-29",
        "params": {},
        "per_sequence": {"sparsity": [float(x) for x in per_s], "recall": [recall] * N},
        "sequence_lengths": list(range(50, 50 + N)),
    }


def make_run(folder, window_shift=0.0, bigbird_noise=None, dataset_hash="h1"):
    path = folder / "toy" / "records.jsonl"
    for layer in (0, 1):
        append_record(
            path, rec("window", "window[w=3]", layer, 0.6, 0.96, window_shift, None, dataset_hash)
        )
        append_record(
            path, rec("bigbird", "bigbird", layer, 0.5, 0.97, 0.0, bigbird_noise, dataset_hash)
        )
    return folder


def acc_rec(mid, method, correct, tokens):
    return {
        "dataset": "toy",
        "method": method,
        "method_id": mid,
        "accuracy": sum(correct) / sum(tokens),
        "split": "eval-windows=8",
        "windows": len(tokens),
        "num_tokens": sum(tokens),
        "per_window": {"correct": correct, "tokens": tokens, "loss": [1.0] * len(tokens)},
        "dataset_hash": "h1",
        "sparsebench": "0.1.0",
        "params": {},
    }


def test_compare_refuses_different_dataset_builds(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", dataset_hash="h2")
    with pytest.raises(ValueError, match="toy: .* dataset build h1, .* build h2"):
        compare_runs(a, b)


def test_compare_refuses_runs_without_a_shared_dataset(tmp_path):
    a = make_run(tmp_path / "a")
    other = tmp_path / "b" / "other" / "records.jsonl"
    r = rec("window", "window[w=3]", 0, 0.6, 0.96)
    append_record(other, {**r, "dataset": "other"})
    with pytest.raises(ValueError, match="share no dataset"):
        compare_runs(a, tmp_path / "b")


def test_compare_flags_a_real_difference_and_not_a_null_one(tmp_path):
    a = make_run(tmp_path / "a")
    # B: window sparser by 0.03 on every sequence; bigbird moved by zero-mean noise only.
    noise = RNG.normal(0.0, 0.01, size=N)
    noise -= noise.mean()
    b = make_run(tmp_path / "b", window_shift=0.03, bigbird_noise=noise)
    df = compare_runs(a, b).set_index("method")
    win, big = df.loc["window"], df.loc["bigbird"]
    assert win["sparsity_delta"] == pytest.approx(0.03)
    assert win["sparsity_delta_lo"] > 0 and bool(win["flag"])
    # A constant shift of every sequence: each paired resample moves by exactly 0.03.
    assert win["sparsity_delta_lo"] == pytest.approx(0.03) and win["sparsity_delta_hi"] == (
        pytest.approx(0.03)
    )
    assert big["sparsity_delta"] == pytest.approx(0.0, abs=1e-12)
    assert big["sparsity_delta_lo"] < 0 < big["sparsity_delta_hi"] and not bool(big["flag"])
    # Paired: far narrower than the per-sequence spread (0.05) the two runs share.
    assert big["sparsity_delta_hi"] - big["sparsity_delta_lo"] < 0.02
    assert win["config_a"] == win["config_b"] == "window[w=3]"


def test_compare_accuracy_paired_over_windows_and_speed(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b")
    tokens = [100, 90, 110, 100, 95, 105, 100, 100]
    ca = [40, 35, 45, 41, 38, 42, 40, 39]
    cb = [c + 5 for c in ca]  # five more correct tokens in every window
    append_record(a / "toy" / "accuracy.jsonl", acc_rec("window[w=3]", "window", ca, tokens))
    append_record(b / "toy" / "accuracy.jsonl", acc_rec("window[w=3]", "window", cb, tokens))
    for folder, t in ((a, 0.05), (b, 0.04)):
        for spec, time_s in (("dense_entmax", 0.1), ("window:w=3", t)):
            append_record(
                folder / "speed" / "records.jsonl",
                {
                    "spec": spec,
                    "method": spec.split(":")[0],
                    "n": 1024,
                    "normalizer": "entmax",
                    "device": "cpu",
                    "date": "2026-11-29",
                    "end_to_end": {"median_s": time_s, "iqr_s": 0.001},
                    "peak_mb": 1.0,
                    "params": {},
                },
            )
    df = compare_runs(a, b).set_index("method")
    win = df.loc["window"]
    assert win["accuracy_delta"] == pytest.approx(40 / 800)
    lo, hi = stats.paired_ratio_delta_interval(cb, ca, tokens)
    assert (win["accuracy_delta_lo"], win["accuracy_delta_hi"]) == pytest.approx((lo, hi))
    assert win["accuracy_delta_lo"] > 0 and bool(win["flag"])
    assert win["x_dense_a"] == pytest.approx(0.5) and win["x_dense_delta"] == pytest.approx(-0.1)
    assert np.isnan(df.loc["bigbird", "accuracy_delta"])  # no accuracy records: no figure


def test_format_comparison_is_narrow_and_marks_flags(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", window_shift=0.03)
    text = format_comparison(compare_runs(a, b))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    window = next(line for line in lines if line.strip().startswith("window"))
    bigbird = next(line for line in lines if line.strip().startswith("bigbird"))
    assert window.rstrip().endswith("*") and not bigbird.rstrip().endswith("*")
    assert "+0.0300 ± 0.0000" in window or "+0.030" in window
    assert "toy (dataset build h1)" in text
