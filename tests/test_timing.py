"""The speed harness measures every part of a case in a fresh process."""

from __future__ import annotations

import json

import pytest
import torch

from sparsebench.bench import GOLD_IMPLS, gold_case, measure_case, stopwatch
from sparsebench.bench.cli import main
from sparsebench.bench.speed import run_case


def test_stopwatch_reports_median_and_spread():
    calls = []
    out = stopwatch(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7
    assert 0 <= out["min_s"] <= out["median_s"] and out["iqr_s"] >= 0


def test_case_parts_and_memory():
    rec = measure_case(
        {
            "method": "window",
            "params": {"w": 9, "global_tokens": 2},
            "n": 96,
            "heads": 2,
            "dim": 8,
            "repeats": 2,
            "block_size": 32,
        }
    )
    assert "error" not in rec, rec
    for part in ("predict", "layout", "kernel", "end_to_end"):
        assert rec[part]["median_s"] > 0
    assert rec["peak_mb"] >= 0 and rec["source"] == "generator"
    assert 0 < rec["block_density"] <= 1 and 0 < rec["sparsity"] < 1
    dense = measure_case({"method": "sdpa", "n": 64, "heads": 2, "dim": 8, "repeats": 2})
    assert dense["kernel"]["median_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_gpu_only_baseline_is_refused_before_measuring():
    case = {"method": "xformers", "n": 64, "heads": 2, "dim": 8, "repeats": 1}
    with pytest.raises(ValueError, match="CUDA only"):
        measure_case(case)


def test_alpha_reaches_the_kernel():
    case = {"method": "window", "n": 48, "heads": 2, "dim": 8, "repeats": 1, "alpha": 1.7}
    rec = run_case({**case, "block_size": 16})
    assert rec["alpha"] == 1.7 and rec["kernel"]["median_s"] > 0


def test_gold_suite_cases_run_on_the_same_harness():
    fields = {"impl", "n", "heads", "dim", "repeats", "time_min_s", "time_median_s"}
    for impl in GOLD_IMPLS:
        rec = measure_case(gold_case(impl, 48, 2, 8, 2))
        assert "error" not in rec, rec
        assert fields <= set(rec) and rec["impl"] == impl and rec["time_min_s"] > 0
        assert not rec["peak_extra_mb"] < 0  # NaN where the peak counter cannot reset


def test_speed_command_writes_records(tmp_path, capsys):
    out = tmp_path / "speed.jsonl"
    argv = [
        "speed",
        "--lengths",
        "64",
        "--heads",
        "2",
        "--dim",
        "8",
        "--repeats",
        "1",
        "--block-size",
        "32",
        "--methods",
        "sdpa;window:w=5",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["spec"] for r in recs] == ["sdpa", "window:w=5"]
    assert "window:w=5" in capsys.readouterr().out
