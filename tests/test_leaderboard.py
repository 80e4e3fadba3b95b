"""Leaderboard files from hand-made records: ranking, bold best, reference block, plots."""

from __future__ import annotations

import csv

import pytest

from sparsebench.bench.cli import main
from sparsebench.bench.report import write_leaderboard
from sparsebench.bench.runs import append_record


def rec(method, mid, layer, s, r, **extra):
    return {
        "dataset": "toy",
        "method": method,
        "method_id": mid,
        "layer": layer,
        "sparsity": s,
        "recall": r,
        "exact": r,
        "precision": 0.5,
        "gold_sparsity": 0.9,
        "block_sparsity": s / 2,
        "fit_s": 0.1,
        "predict_s": 0.002,
        "date": "2026-11-22",
        "git_sha": "abc",
        "device": "cpu",
        "cpu": "x86_64",
        "params": {},
        **extra,
    }


def make(tmp_path):
    path = tmp_path / "results" / "toy" / "records.jsonl"
    for layer in (0, 1):
        append_record(path, rec("window", "window[w=3]", layer, 0.8, 0.96))
        append_record(path, rec("window", "window[w=9]", layer, 0.6, 0.99))
        append_record(path, rec("bigbird", "bigbird", layer, 0.85, 0.9))
        append_record(path, rec("full", "full", layer, 0.0, 1.0))
    # A configuration with only one layer done is not averaged in.
    append_record(path, rec("window", "window[w=1]", 0, 0.95, 0.97))
    return tmp_path / "results"


def test_leaderboard_files(tmp_path):
    results = make(tmp_path)
    written = write_leaderboard(results)
    names = {p.name for p in written}
    assert {
        "leaderboard.md",
        "leaderboard.csv",
        "configs.csv",
        "pareto.png",
        "index.html",
        "README.md",
    } <= names
    md = (results / "toy" / "leaderboard.md").read_text()
    body = [line for line in md.splitlines() if line.startswith("| ")]
    # Ranked rows first (window beats bigbird at recall 0.95), then the reference block.
    assert body[1].startswith("| window | ") and body[2].startswith("| bigbird | ")
    assert "*reference rows*" in body[3] and body[4].startswith("| full | ")
    # Records without per-sequence values: figures without an interval, and so no best mark.
    assert "**" not in md and "±" not in body[1] and "0.800" in body[1]
    assert "`window[w=3]`" in body[1]
    assert "window[w=1]" not in md  # incomplete configuration left out
    rows = list(csv.DictReader(open(results / "toy" / "leaderboard.csv")))
    by = {r["method"]: r for r in rows}
    assert float(by["window"]["sparsity@0.99"]) == 0.6
    assert by["bigbird"]["sparsity@0.95"] == ""
    assert (results / "toy" / "pareto.png").stat().st_size > 10_000
    page = (results / "index.html").read_text()
    assert "toy/pareto.png" in page and "<table>" in page and "onclick" in page


def test_leaderboard_cli_without_records(tmp_path, capsys):
    assert main(["leaderboard", "--results", str(tmp_path)]) == 2
    assert "no records" in capsys.readouterr().err


def test_accuracy_columns_and_plot(tmp_path):
    results = make(tmp_path)
    acc = results / "toy" / "accuracy.jsonl"
    for mid, method, a in (
        ("gold", "gold", 0.40),
        ("window[w=3]", "window", 0.35),
        ("window[w=9]", "window", 0.39),
    ):
        append_record(
            acc,
            {
                "dataset": "toy",
                "method": method,
                "method_id": mid,
                "accuracy": a,
                "delta_accuracy": a - 0.40,
                "task": "next-token",
                "split": "eval-windows=8",
                "windows": 8,
                "params": {},
            },
        )
    write_leaderboard(results)
    md = (results / "toy" / "leaderboard.md").read_text()
    window_row = next(line for line in md.splitlines() if line.startswith("| window |"))
    assert "0.3500" in window_row and "-0.0500" in window_row
    assert (results / "toy" / "accuracy.png").stat().st_size > 10_000
    assert "toy/accuracy.png" in (results / "index.html").read_text()
    assert "runs over different held-out windows" not in md

    # The same configuration scored again over more windows: the table reports that run,
    # the plot keeps drawing the run with the most configurations.
    append_record(
        acc,
        {
            "dataset": "toy",
            "method": "window",
            "method_id": "window[w=3]",
            "accuracy": 0.375,
            "delta_accuracy": -0.025,
            "task": "next-token",
            "split": "eval-windows=32",
            "windows": 32,
            "params": {},
        },
    )
    write_leaderboard(results)
    md = (results / "toy" / "leaderboard.md").read_text()
    window_row = next(line for line in md.splitlines() if line.startswith("| window |"))
    assert "0.3750" in window_row and "-0.0250" in window_row and "0.3500" not in window_row
    assert "2 runs over different held-out windows" in md


def test_widest_and_plot_run_pick_by_tokens_and_configurations():
    import pandas as pd

    from sparsebench.bench.report.intervals import plot_run, widest

    acc = pd.DataFrame(
        {
            "method_id": ["gold", "a", "b", "gold", "a"],
            "split": ["w=8", "w=8", "w=8", "w=all", "w=all"],
            "windows": [8, 8, 8, 434, 434],
            "tokens": [4096, 4096, 4096, 222_000, 222_000],
            "accuracy": [0.4, 0.3, 0.2, 0.41, 0.31],
        }
    )
    w = widest(acc)
    assert list(w["method_id"]) == ["b", "gold", "a"]
    assert list(w["accuracy"]) == [0.2, 0.41, 0.31]
    assert list(plot_run(acc)["split"].unique()) == ["w=8"]
    assert plot_run(acc[acc["method_id"] != "b"])["split"].unique().tolist() == ["w=all"]


def test_speed_table_crossover_and_plot(tmp_path):
    from sparsebench.bench.report import load_records, speed_table

    results = make(tmp_path)
    sp = results / "speed" / "records.jsonl"
    times = {
        "dense_entmax": {512: 0.01, 1024: 0.04, 2048: 0.16},
        "window:w=5": {512: 0.02, 1024: 0.03, 2048: 0.05},
    }
    for spec, by_n in times.items():
        for n, t in by_n.items():
            append_record(
                sp,
                {
                    "spec": spec,
                    "method": spec.split(":")[0],
                    "n": n,
                    "normalizer": "entmax",
                    "device": "cpu",
                    "date": "2026-11-22",
                    "end_to_end": {"median_s": t, "iqr_s": 0.001, "min_s": t},
                    "peak_mb": 10.0 * n / 512,
                    "params": {},
                },
            )
    # The same method on another execution path is a case of its own, not a newer run.
    append_record(
        sp,
        {
            "spec": "window:w=5",
            "method": "window",
            "n": 2048,
            "normalizer": "entmax",
            "device": "cpu",
            "path": "flex",
            "date": "2026-11-23",
            "end_to_end": {"median_s": 0.5, "iqr_s": 0.001, "min_s": 0.5},
            "peak_mb": 1.0,
            "params": {},
        },
    )
    t = speed_table(load_records(sp))
    assert t[t["path"] == "flex"]["time_s"].tolist() == [0.5]
    w = t[(t["spec"] == "window:w=5") & (t["path"] == "auto")].set_index("n")
    assert w.loc[1024, "x_best_dense"] == pytest.approx(0.75)
    assert w.loc[512, "crossover_n"] == 1024
    write_leaderboard(results)
    # The dataset table takes each method's case at its largest N: 0.05 s against 0.16 s.
    row = next(
        r
        for r in csv.DictReader(open(results / "toy" / "leaderboard.csv"))
        if r["method"] == "window"
    )
    assert float(row["speed_x_dense"]) == pytest.approx(0.3125)
    assert float(row["speed_peak_mb"]) == pytest.approx(40.0)
    assert "N=2048" in row["speed_case"]
    assert (results / "speed" / "speed.png").stat().st_size > 10_000
    speed_md = (results / "speed" / "speed.md").read_text()
    assert "| cpu | entmax | `window:w=5` | auto | 1024 |" in speed_md
    # The header describes the speed records themselves, not the graph records.
    assert f"newest record of each of {len(t)} cases" in speed_md
    assert "2026-11-23" in speed_md.splitlines()[2]


def test_records_packed_with_gzip_are_read_and_resumed_after(tmp_path):
    import gzip

    from sparsebench.bench.runs import read_records

    results = make(tmp_path)
    plain = results / "toy" / "records.jsonl"
    write_leaderboard(results)
    table = (results / "toy" / "leaderboard.csv").read_text()
    packed = plain.with_name("records.jsonl.gz")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    assert len(read_records(plain)) == 9
    write_leaderboard(results)
    assert (results / "toy" / "leaderboard.csv").read_text() == table
    # New records go to the plain file and are read after the packed ones.
    append_record(plain, rec("random", "random", 0, 0.5, 0.5))
    recs = read_records(plain)
    assert len(recs) == 10 and recs[-1]["method"] == "random"


def test_columns_read_the_metric_table():
    from sparsebench.bench import METRICS
    from sparsebench.bench.report import COLUMNS

    for c in COLUMNS:
        assert c.metric in METRICS
        if c.ranked:
            assert c.title.endswith("↑" if METRICS[c.metric].higher_is_better else "↓")
    by = {c.key: c for c in COLUMNS}
    assert by["tokens@0.95"].title == "Tokens" and not by["tokens@0.95"].ranked
    assert by["output_error@0.95"].title == "Output error @ 0.95 ↓"
    assert by["delta_accuracy@0.95"].format(-0.05, -0.061, -0.039) == "-0.050 ± 0.011"
    assert by["sparsity@0.95"].title == "Sparsity @ recall 0.95 ↑"
    assert by["delta_accuracy@0.95"].format(-0.05) == "-0.0500"
    assert by["predict_ms"].title == "Predict ms ↓" and by["predict_ms"].format(2.0) == "2.0"
    assert by["speed_peak_mb"].format(40.4) == "40"


def test_layer_average_averages_the_per_layer_metrics(tmp_path):
    from sparsebench.bench import METRICS
    from sparsebench.bench.report import layer_average, load_records

    results = make(tmp_path)
    avg = layer_average(load_records(results / "toy" / "records.jsonl"))
    per_layer = [m for m, spec in METRICS.items() if spec.per_layer and m in avg]
    expected = "recall sparsity exact precision gold_sparsity block_sparsity fit_s predict_s"
    assert per_layer == expected.split()
    assert list(avg.columns[3 : 3 + len(per_layer)]) == per_layer


def test_leaderboard_speed_column_takes_cpu_cases_only():
    """A GPU case at a longer N must not stand in the CPU leaderboards' speed column."""
    import pandas as pd

    from sparsebench.bench.report.speed_tables import speed_by_method

    def row(device, n, x):
        return {
            "device": device,
            "normalizer": "softmax",
            "spec": "window:w=33",
            "path": "flex",
            "n": n,
            "x_best_dense": x,
            "peak_mb": 1.0,
        }

    sp = pd.DataFrame([row("cpu", 8192, 0.2), row("cuda (Test GPU) bfloat16 causal", 32768, 8.0)])
    got = speed_by_method(sp)["window"]
    assert got["speed_x_dense"] == 0.2 and "N=8192" in got["speed_case"]
    assert speed_by_method(sp.iloc[1:]) == {}
