"""``speed --preset methods``: every method's configurations, fits on a dataset, resume, report.

Measurements run at tiny sizes only (N = 128/256, 2 heads, one repeat); records with made-up
figures stand in for measurements where only the bookkeeping is under test.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex

from sparsebench import datasets, methods
from sparsebench.bench.cli import main
from sparsebench.bench.methods_bench import (
    LEADERBOARD,
    LENGTHS,
    _measure,
    config_params,
    measured_cases,
    method_configs,
    preset_cases,
)
from sparsebench.bench.report import load_records, speed_table
from sparsebench.bench.report.speed_tables import speed_by_method
from sparsebench.bench.report.style import family_of, method_style
from sparsebench.bench.runs import append_record, read_records
from sparsebench.bench.speed_cases import DENSE, fit_split, fitted_method, validate_case

ROOT = Path(__file__).resolve().parents[1]
KMEANS_ID = "sparsefinder_kmeans[num_clusters=4,top_clusters=2]"


def _board(path: Path, rows: dict[str, str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "config@0.95"])
        w.writerows(rows.items())
    return path


@pytest.fixture(scope="module")
def fit_dir(tmp_path_factory) -> str:
    """A tiny causal dataset on disk (2 heads of 16) to fit learned methods on."""
    folder = tmp_path_factory.mktemp("fit") / "tiny"
    datasets.synthetic(num_seqs=6, layers=1, heads=2, n=48, d=16, causal=True, seed=0).save(folder)
    return str(folder)


def test_config_lookup_from_a_leaderboard_csv(tmp_path):
    board = _board(tmp_path / "lb.csv", {"sparsefinder_kmeans": KMEANS_ID, "window": ""})
    got = {
        (c.method, c.role): c
        for c in method_configs(["sparsefinder_kmeans", "window", "dsa"], board)
    }
    lb = got["sparsefinder_kmeans", "leaderboard"]
    assert lb.spec == "sparsefinder_kmeans:num_clusters=4,top_clusters=2"
    assert lb.params == {"num_clusters": 4, "top_clusters": 2} and lb.learns
    assert got["sparsefinder_kmeans", "default"].params == {}
    # A row without a recall-0.95 configuration, and a method without a row: the defaults, once.
    assert "no configuration reaches recall 0.95" in got["window", "leaderboard+default"].source
    assert "no row" in got["dsa", "leaderboard+default"].source
    assert config_params("dsa[density=0.3,sigma=0.5]") == ("dsa", {"density": 0.3, "sigma": 0.5})
    with pytest.raises(ValueError, match="nonsense"):
        config_params("window[nonsense=3]")
    with pytest.raises(ValueError, match="no such file"):
        method_configs(["window"], tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("method,recall\nwindow,0.9\n")
    with pytest.raises(ValueError, match="config@0.95"):
        method_configs(["window"], tmp_path / "bad.csv")


def test_the_published_leaderboard_gives_every_method_a_configuration():
    configs = method_configs(methods.names(), ROOT / LEADERBOARD)
    assert {c.method for c in configs} == set(methods.names())
    for c in configs:
        methods.create(c.method, **c.params)  # every configuration is valid as published


def test_case_list_covers_every_registered_method_with_both_configs(tmp_path):
    board = _board(tmp_path / "lb.csv", {"sparsefinder_kmeans": KMEANS_ID, "gold": "gold"})
    configs = method_configs(methods.names(), board)
    base = {"heads": 2, "dim": 16, "device": "cpu", "block_size": 64, "fit_data": "x"}
    items = preset_cases(configs, base)
    by_method: dict[str, set[str]] = {}
    for config, case in items:
        validate_case(case)
        if config is not None:
            by_method.setdefault(config.method, set()).update(config.roles)
            assert case["causal"] and ("fit_data" in case) == config.learns
    assert set(by_method) == set(methods.names())
    assert all(roles == {"leaderboard", "default"} for roles in by_method.values())
    kmeans = {c.spec for c, _ in items if c is not None and c.method == "sparsefinder_kmeans"}
    assert kmeans == {"sparsefinder_kmeans", "sparsefinder_kmeans:num_clusters=4,top_clusters=2"}
    # The baseline at every length first; the longest length after every shorter case.
    first = items[: len(LENGTHS)]
    assert [(c, case["method"], case["n"]) for c, case in first] == [
        (None, "sdpa", n) for n in LENGTHS
    ]
    long = [i for i, (c, case) in enumerate(items) if c and case["n"] == max(LENGTHS)]
    assert min(long) > max(i for i, (_, case) in enumerate(items) if case["n"] < max(LENGTHS))
    # On CUDA a configuration's cases of one stage are consecutive (they share a worker).
    cuda = preset_cases(configs, {**base, "device": "cuda"})
    specs = [c.spec for c, case in cuda if c is not None and case["n"] < max(LENGTHS)]
    runs = [s for i, s in enumerate(specs) if i == 0 or specs[i - 1] != s]
    assert len(runs) == len(set(specs))


def test_fit_on_a_named_dataset_repeats_heads_and_is_kept_for_later_processes(
    fit_dir, tmp_path, monkeypatch
):
    from sparsebench.bench import speed_cases
    from sparsebench.bench.speed import run_case

    train, about = fit_split(fit_dir, 4, 16)
    assert train.q.shape[1:3] == (1, 4) and torch.equal(train.q[:, 0, 2], train.q[:, 0, 0])
    assert "train split, layer 0" in about and "2 heads repeated to 4" in about
    with pytest.raises(ValueError, match="head dimension 16"):
        fit_split(fit_dir, 2, 64)
    case = {
        "method": "sparsefinder_kmeans",
        "params": {"num_clusters": 2},
        "n": 128,
        "heads": 2,
        "dim": 16,
        "repeats": 1,
        "block_size": 64,
        "causal": True,
        "fit_data": fit_dir,
        "fit_cache": str(tmp_path / "fitted"),
    }
    rec = run_case(case)
    assert "train split, layer 0" in rec["fit_on"] and rec["path"] == "grouped"
    assert len(list((tmp_path / "fitted").glob("*.pt"))) == 1
    # Another process finds the fit in the cache and does not fit again.
    monkeypatch.setattr(speed_cases, "_FITTED", {})
    monkeypatch.setattr(speed_cases, "_train", lambda case: pytest.fail("fitted again"))
    m, seconds, about = fitted_method(case)
    assert m.id == "sparsefinder_kmeans[num_clusters=2]"
    assert [a for a in vars(m) if a.endswith("_") and not a.startswith("_")]  # learned state
    assert seconds == rec["fit_s"] and about == rec["fit_on"]


def _fake_measure(asked: list):
    """A stand-in for the harness: a record shaped like its own (figures made up)."""

    def measure(case, timeout=0):
        asked.append((case["method"], case["n"]))
        part = {"median_s": 0.01, "min_s": 0.01, "iqr_s": 0.0}
        return {**case, "end_to_end": part, "kernel": part, "peak_mb": 1.0, "path": "block"}

    return measure


def test_preset_run_records_then_resume_keeps_measured_cases(
    fit_dir, tmp_path, monkeypatch, capsys
):
    import sparsebench.bench.speed as speed

    board = _board(tmp_path / "lb.csv", {"sparsefinder_kmeans": KMEANS_ID, "window": ""})
    run = tmp_path / "run"
    argv = ["speed", "--preset", "methods", "--methods", "sparsefinder_kmeans;window"]
    argv += ["--leaderboard", str(board), "--fit-data", fit_dir, "--heads", "2", "--dim", "16"]
    argv += ["--repeats", "1"]
    assert main([*argv, "--lengths", "128", "--results", str(run)]) == 0
    out = run / "speed" / "records.jsonl"
    recs = read_records(out, keyed=False)
    assert {(r["spec"], r["config_role"]) for r in recs} == {
        ("sdpa", "dense baseline"),
        ("window", "leaderboard+default"),
        ("sparsefinder_kmeans:num_clusters=4,top_clusters=2", "leaderboard"),
        ("sparsefinder_kmeans", "default"),
    }
    for r in recs:
        assert r["preset"] == "methods" and r["causal"] and not r.get("error"), r
        assert r["block_size"] == 64 and r["heads"] == 2
        assert ("fit_on" in r) == r["spec"].startswith("sparsefinder"), r
    assert {r["path"] for r in recs if r["spec"] == "window"} == {"block"}
    assert len(list((run / "speed" / "fitted").glob("*.pt"))) == 2
    assert "x_best_dense" in capsys.readouterr().out
    # A failed case runs again; measured ones are kept.
    append_record(out, {**recs[1], "n": 256, "error": "timed out after 600 s"})
    assert len(measured_cases(out)) == 4
    asked: list = []
    monkeypatch.setattr(speed, "measure_case", _fake_measure(asked))
    assert main([*argv, "--lengths", "128,256", "--resume", str(run)]) == 0
    assert sorted(asked) == sorted(
        [("sdpa", 256), ("window", 256), ("sparsefinder_kmeans", 256), ("sparsefinder_kmeans", 256)]
    )
    assert "4 cases to measure" in capsys.readouterr().err


def test_budget_cuts_cases_into_error_records(monkeypatch):
    import sparsebench.bench.speed as speed

    case = {"method": "window", "params": {}, "n": 128, "heads": 2, "dim": 16, "device": "cpu"}
    recs = list(_measure([(None, case), (None, case)], time.monotonic() - 1, 60))
    assert [r["error"] for _, _, r in recs] == ["skipped: the time budget was spent"] * 2

    def slow(case, timeout=0):
        return {**case, "error": f"timed out after {timeout:.0f} s"}

    monkeypatch.setattr(speed, "measure_case", slow)
    ((_, _, rec),) = _measure([(None, case)], time.monotonic() + 5, 600)
    assert rec["error"] == "stopped: the time budget was spent"


def test_cuda_cases_of_one_configuration_share_a_worker(tmp_path, monkeypatch):
    """The grouping only: the workers are faked (no GPU needed)."""
    import sparsebench.bench.speed_group as speed_group

    groups = []

    def fake_group(cases, timeout, *, deadline=None, on_start=None):
        groups.append([(c["method"], c["n"]) for c in cases])
        return iter([{**c, "path": "block"} for c in cases])

    monkeypatch.setattr(speed_group, "measure_group", fake_group)
    board = _board(tmp_path / "lb.csv", {"window": "window[w=5]"})
    configs = method_configs(["window", "gold"], board)
    items = preset_cases(configs, {"device": "cuda", "heads": 2, "dim": 16}, (128, 256))
    recs = list(_measure(items, time.monotonic() + 60, 60))
    assert len(recs) == len(items) == 8
    assert groups == [
        [("sdpa", 128), ("sdpa", 256)],
        [("window", 128), ("window", 256)],
        [("gold", 128), ("gold", 256)],
        [("window", 128), ("window", 256)],
    ]


def test_bad_preset_options_stop_before_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["speed", "--preset", "methods", "--results", str(run)]
    assert main([*args, "--methods", "window:w=3"]) == 2
    assert "--methods takes method names or globs" in capsys.readouterr().err
    assert main([*args, "--leaderboard", str(tmp_path / "none.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not run.exists()


def test_gpu_preset_gets_its_lengths_as_text(monkeypatch):
    from sparsebench.bench import gpu_bench

    seen = []
    monkeypatch.setattr(gpu_bench, "run_preset", lambda args: seen.append(args.lengths) or 0)
    assert main(["speed", "--preset", "gpu", "--lengths", "4096,32768"]) == 0
    assert main(["speed", "--preset", "gpu"]) == 0
    assert seen == ["4096,32768", None]


def _row(spec, n, x, role="", device="cpu causal", date="2026-01-01"):
    return {
        "device": device,
        "normalizer": "softmax",
        "spec": spec,
        "role": role,
        "path": "block b=64",
        "n": n,
        "x_best_dense": x,
        "peak_mb": 10.0 * x,
        "date": date,
    }


def test_leaderboard_speed_takes_the_leaderboard_config_not_the_fastest():
    lb = "sparsefinder_kmeans:num_clusters=4,top_clusters=2"
    sp = pd.DataFrame(
        [
            _row("sparsefinder_kmeans:num_clusters=16", 16384, 0.1),  # fastest, not the board's
            _row(lb, 8192, 0.7, "leaderboard"),
            _row(lb, 16384, 0.9, "leaderboard"),
            _row("sparsefinder_kmeans", 16384, 0.2, "default"),
            _row("window:w=129", 16384, 0.05),  # no leaderboard case: any case
            _row("window", 32768, 0.01, "leaderboard+default", device="cuda (GPU) causal"),
        ]
    )
    got = speed_by_method(sp)
    assert got["sparsefinder_kmeans"]["speed_x_dense"] == 0.9
    assert "N=16384; leaderboard config" in got["sparsefinder_kmeans"]["speed_case"]
    assert got["window"]["speed_x_dense"] == 0.05  # the GPU case does not count


def test_speed_table_keeps_roles_across_later_runs(tmp_path):
    out = tmp_path / "records.jsonl"
    part = {"median_s": 0.5, "min_s": 0.5, "iqr_s": 0.0}
    rec = {"spec": "window", "method": "window", "n": 1024, "normalizer": "softmax", "date": "1"}
    rec |= {"device": "cpu", "end_to_end": part, "params": {}, "peak_mb": 1.0}
    append_record(out, {**rec, "config_role": "leaderboard+default"})
    append_record(out, {**rec, "date": "2"})  # a later run outside the preset
    append_record(out, {**rec, "spec": "sdpa", "method": "sdpa", "config_role": "dense baseline"})
    t = speed_table(load_records(out)).set_index("spec")
    assert t.loc["window", "role"] == "leaderboard+default" and t.loc["sdpa", "role"] == ""


def test_speed_plot_draws_every_method_in_its_colour_and_family(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from sparsebench.bench.report.speed_plot import speed_plot

    saved = []
    original = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda self, *a, **k: saved.append(self) or original(self, *a, **k)
    )
    rows = [
        {**_row(name, n, 1.0, "leaderboard+default"), "time_s": n / 1e4, "peak_mb": n / 100}
        for name in [*methods.names(), "sdpa"]
        for n in (128, 256)
    ]
    speed_plot(pd.DataFrame(rows), tmp_path / "speed.png")
    fig = saved[-1]
    titles = [a.get_title() for a in fig.axes]
    columns = len(set(titles) - {""})
    for name in methods.names():
        family = family_of(name)
        col = titles.index(family)
        lines = [
            line
            for i, ax in enumerate(fig.axes)
            if i % columns == col
            for line in ax.lines
            if line.get_label().startswith(f"{name} [")
        ]
        assert lines, name
        assert {to_hex(line.get_color()) for line in lines} == {method_style(name)["color"]}
    for name in DENSE:  # every dense kernel is drawn grey and dashed, never in a family's hue
        st = method_style(name)
        r, g, b = (int(st["color"][i : i + 2], 16) for i in (1, 3, 5))
        assert r == g == b and st["linestyle"] == "--" and family_of(name) == "dense kernel"
