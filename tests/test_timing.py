"""The speed harness measures every part of a case in a fresh process."""

from __future__ import annotations

import json

import pytest
import torch

from sparsebench.bench import (
    GOLD_IMPLS,
    dense_attention,
    gold_case,
    measure_case,
    stopwatch,
    validate_case,
)
from sparsebench.bench.cli import main
from sparsebench.bench.gpu_bench import LINES, preset_cases, window
from sparsebench.bench.speed import run_case
from sparsebench.bench.speed_cases import CUDA_ONLY
from sparsebench.bench.speed_group import measure_group


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
    # A record names the case's device, not the machine's GPU (provenance would).
    assert [(r["device"], r["dtype"], r["causal"]) for r in recs] == [("cpu", "float32", False)] * 2
    assert "window:w=5" in capsys.readouterr().out


# -- the GPU-side harness: cases, baselines, grouped workers, the preset and its report ---------
CPU_CASE = {"method": "window", "n": 64, "heads": 2, "dim": 8, "repeats": 1, "block_size": 32}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals on a CPU-only machine")
@pytest.mark.parametrize("name", sorted(CUDA_ONLY))
def test_cuda_baselines_are_refused_on_cpu(name):
    with pytest.raises(ValueError, match="CUDA only"):
        validate_case({**CPU_CASE, "method": name, "block_size": 128})


@pytest.mark.parametrize(
    "change, words",
    [
        ({"dtype": "float64"}, "dtype must be one of"),
        ({"causal": "yes"}, "causal must be true or false"),
        ({"method": "entmax15_full", "alpha": 1.7}, "entmax_bisect_full"),
        ({"path": "flex_entmax", "normalizer": "softmax"}, "path 'flex'"),
        ({"path": "flex"}, "flex_entmax"),
    ],
)
def test_new_case_fields_are_checked(change, words):
    with pytest.raises(ValueError, match=words):
        validate_case({**CPU_CASE, **change})


def test_dtype_causal_and_baseline_normaliser_reach_the_record():
    rec = run_case({**CPU_CASE, "dtype": "bfloat16", "causal": True})
    assert rec["dtype"] == "bfloat16" and rec["causal"] and rec["kernel"]["median_s"] > 0
    assert rec["timer"] == "perf_counter" and 0 < rec["sparsity"] < 1
    causal = run_case({**CPU_CASE, "method": "sdpa", "causal": True, "normalizer": "entmax"})
    assert causal["normalizer"] == "softmax"  # a baseline records what it computes
    bisect = run_case({**CPU_CASE, "method": "entmax_bisect_full", "alpha": 1.7})
    assert bisect["normalizer"] == "entmax" and bisect["end_to_end"]["median_s"] > 0


def test_entmax_baselines_are_causal_when_asked():
    from sparsebench.bench.speed_baselines import dense_call, full_scores_entmax
    from sparsebench.methods import Band, Graph

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 24, 8, generator=g) for _ in range(3))
    p = full_scores_entmax(q, k, causal=True, bisect=True, alpha=1.5)
    assert torch.all(p.triu(1) == 0) and torch.allclose(p.sum(-1), torch.ones(1, 2, 24))
    causal = Graph((1, 2, 24, 24), [Band(-24, 24)], causal=True)
    ref = dense_attention(q, k, v, causal)
    for name in ("entmax15_full", "entmax_bisect_full", "dense_entmax"):
        out = dense_call(name, q, k, v, {"causal": True, "alpha": 1.5})()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_flex_entmax_case_reports_compile_and_threshold_passes():
    rec = run_case({**CPU_CASE, "path": "flex_entmax", "n": 128, "dim": 16, "block_size": 64})
    assert rec["path"] == "flex_entmax" and rec["compile_s"] >= 0
    assert 3 <= rec["threshold_passes"] <= 16 and rec["end_to_end"]["median_s"] > 0


def test_group_worker_restarts_after_a_case_that_runs_too_long():
    slow = gold_case("entmax15", 8192, 4, 8, 1)  # tens of seconds on a CPU
    quick = {**CPU_CASE, "method": "sdpa"}
    recs = list(measure_group([quick, slow, quick], timeout=12))
    assert [("error" in r) for r in recs] == [False, True, False]
    assert "timed out" in recs[1]["error"] and recs[2]["kernel"]["median_s"] > 0


def test_group_stops_at_the_deadline_without_starting():
    import time

    recs = list(measure_group([CPU_CASE, CPU_CASE], 60, deadline=time.monotonic()))
    assert [r["error"] for r in recs] == ["skipped: the time budget was spent"] * 2


def test_gpu_preset_cases_are_well_formed():
    count = 0
    for line in LINES:
        for case in preset_cases(line):
            assert case["causal"] and case["heads"] == 16 and case["dim"] == 64
            if case["method"] not in CUDA_ONLY:  # the rest can be checked on any machine
                validate_case({**case, "device": "cpu"})
            count += 1
    assert 40 <= count <= 70
    assert window(32768) == {"w": 1025, "global_tokens": 2}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_gpu_preset_exits_2_at_once_without_cuda(tmp_path, capsys):
    import subprocess
    import sys

    assert main(["speed", "--preset", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0] and err[0].startswith("sparsebench")
    cmd = [sys.executable, "-m", "sparsebench.bench.gpu_bench"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "CUDA is not available" in out.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder made


def _fake(label, normalizer, n, ms, dtype="bfloat16", **extra):
    """A record shaped like the preset's (figures invented for the test, never published)."""
    part = {"median_s": ms / 1000, "min_s": ms / 1000, "iqr_s": 0.0}
    return {
        "preset": "gpu",
        "device": "cuda (Test GPU)",
        "label": label,
        "normalizer": normalizer,
        "dtype": dtype,
        "n": n,
        "end_to_end": part,
        "kernel": part,
        "peak_mb": 10.0,
        "date": "2026-01-01T00:00:00+00:00",
        "torch": "x",
        **extra,
    }


def test_gpu_report_ratios_and_no_report_without_gpu_records(tmp_path):
    from sparsebench.bench.gpu_report import write_gpu_report
    from sparsebench.bench.runs import append_record

    assert write_gpu_report(tmp_path) == []
    append_record(tmp_path / "records.jsonl", {"device": "cpu", "n": 8})
    assert write_gpu_report(tmp_path) == []  # CPU records make no GPU page
    recs = [
        _fake("AdaSplash (dispatcher)", "entmax", 4096, 10.0),
        _fake("window, flex_entmax", "entmax", 4096, 4.0, sparsity=0.99, threshold_passes=7),
        _fake("SDPA flash", "softmax", 4096, 3.0),
        _fake("window, flex", "softmax", 4096, 0.5),
        _fake("SDPA flash", "softmax", 65536, 1.0, error="timed out after 90 s"),
    ]
    for r in recs:
        append_record(tmp_path / "records.jsonl", r)
    written = write_gpu_report(tmp_path, skipped=[("xformers", "bfloat16", "xformers")])
    assert [p.name for p in written] == ["gpu.md", "gpu.png"]
    md = (tmp_path / "gpu.md").read_text()
    assert "## cuda (Test GPU)" in md and "| 4096 | 2.50× | — | 6.00× | 2.50× |" in md
    assert "timed out after 90 s" in md and "needs xformers" in md


def test_gpu_preset_plumbing_with_cpu_cases(tmp_path, monkeypatch, capsys):
    """The preset's run (workers, records, gpu.md) on two tiny CPU lines, CUDA faked in the
    parent only: what the report says is made up, but every step up to it runs."""
    import types

    from sparsebench.bench import gpu_bench

    small = (
        gpu_bench.Line("SDPA flash", "sdpa", "softmax", lengths=(64,)),
        gpu_bench.Line("window, flex", "window", "softmax", "block", lengths=(64,), window=True),
        gpu_bench.Line("xformers", "xformers", "softmax", package="no_such_package_here"),
    )

    def cpu_cases(line, device="cuda"):
        return [
            {**c, "device": "cpu", "heads": 2, "dim": 8, "repeats": 1, "block_size": 32}
            for c in preset_cases(line)
        ]

    monkeypatch.setattr(gpu_bench, "LINES", small)
    monkeypatch.setattr(gpu_bench, "preset_cases", cpu_cases)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    args = types.SimpleNamespace(results=str(tmp_path / "run"), resume=None, out=None, argv=[])
    assert gpu_bench.run_preset(args) == 0
    err = capsys.readouterr().err
    assert "2 cases in 2 worker processes" in err and "no_such_package_here" in err
    md = (tmp_path / "run" / "speed" / "gpu.md").read_text()
    assert "## cuda (Fake GPU)" in md and "needs no_such_package_here" in md
    assert "| softmax | window, flex |" in md


def test_gpu_preset_selection_lengths_and_resume(tmp_path):
    """--only picks lines by label words, --lengths the lengths; measured cases are kept."""
    from sparsebench.bench.gpu_bench import _plan, measured_cases, parse_lengths, select_lines
    from sparsebench.bench.runs import append_record

    picked = select_lines("flex_entmax; sdpa flash")
    assert {line.label for line in picked} == {"window, flex_entmax", "SDPA flash"}
    assert select_lines(None) == LINES
    with pytest.raises(ValueError, match="'nope' matches no line"):
        select_lines("flex;nope")
    assert parse_lengths("4096, 32768") == {4096, 32768} and parse_lengths("") is None
    for bad in ("4096,x", "1000", ","):
        with pytest.raises(ValueError, match="--lengths"):
            parse_lengths(bad)
    out = tmp_path / "records.jsonl"
    assert measured_cases(out) == set()
    part = {"median_s": 0.001, "min_s": 0.001, "iqr_s": 0.0}
    base = {"preset": "gpu", "label": "SDPA flash", "dtype": "bfloat16", "end_to_end": part}
    append_record(out, {**base, "n": 4096})
    append_record(out, {**base, "n": 32768, "error": "timed out after 90 s"})
    done = measured_cases(out)
    assert done == {("SDPA flash", "bfloat16", 4096)}  # a failed case runs again
    runnable, _ = _plan(select_lines("sdpa flash"), {4096, 32768}, done)
    assert [[c["n"] for c in cases] for _, cases in runnable] == [[32768]]
