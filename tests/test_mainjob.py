"""The main job's sharing: one fit per group and layer for a sweep and its accuracy run.

Sharing must not change a figure: records written with a :class:`FitStore` equal those
written without one on every field but timings and provenance (:mod:`tests.records_diff`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest

from sparsebench import datasets
from sparsebench.bench.cli import main
from sparsebench.bench.report import load_records, write_leaderboard
from sparsebench.bench.run_commands import run_summary
from sparsebench.bench.runs import (
    FitStore,
    accuracy_sweep,
    read_records,
    record_key,
    reported_configs,
    sweep,
)
from sparsebench.methods._learned import LearnedProjection

from .records_diff import comparable, diff_folders

QUIET = {"progress": False, "log": lambda m: None}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def lm_like():
    """Small Q/K data with the bundled LM's shape (4 layers, 4 heads of 64) and its name."""
    syn = datasets.synthetic(num_seqs=8, layers=4, heads=4, d=64, n=40, causal=True, seed=3)
    return dataclasses.replace(syn, meta={**syn.meta, "name": "shakespeare-lm"})


@pytest.fixture
def fit_calls(monkeypatch) -> list[int]:
    """The layers that Sparsefinder projectors are fitted on, one entry per ``fit`` call."""
    calls: list[int] = []
    fit = LearnedProjection.fit

    def counted(self, train, layer):
        calls.append(layer)
        return fit(self, train, layer)

    monkeypatch.setattr(LearnedProjection, "fit", counted)
    return calls


def keyed(path: Path) -> dict[str, dict]:
    return {r["key"]: comparable(r) for r in read_records(path)}


def test_a_fit_store_changes_no_record_of_a_sweep(tmp_path, syn_causal, fit_calls):
    methods = "window;sparsefinder_distance;sparsefinder_kmeans;gold;full"
    sweep(syn_causal, tmp_path / "a" / "syn" / "records.jsonl", methods=methods, **QUIET)
    alone = len(fit_calls)
    store = FitStore(syn_causal)
    out = tmp_path / "b" / "syn" / "records.jsonl"
    sweep(syn_causal, out, methods=methods, fits=store, **QUIET)
    # distance: one group, k-means: two (num_clusters 4 and 16); two layers each
    assert alone == len(fit_calls) - alone == 3 * 2
    compared, differ, only_one = diff_folders(tmp_path / "a", tmp_path / "b")
    assert (compared, differ, only_one) == (len(read_records(out)), [], [])
    assert all(r["fit_s"] > 0 for r in read_records(out) if r["method"].startswith("sparse"))


def test_the_accuracy_run_takes_the_sweeps_fits_and_scores_the_same(
    tmp_path, lm_like, fit_calls, monkeypatch
):
    store = FitStore(lm_like)
    sweep(lm_like, tmp_path / "s.jsonl", methods="sparsefinder_distance", fits=store, **QUIET)
    assert sorted(fit_calls) == [0, 1, 2, 3]
    kw = {"methods": "sparsefinder_distance", "grid": "quick", "max_windows": 1, **QUIET}
    shared = tmp_path / "shared.jsonl"
    accuracy_sweep("shakespeare-lm", shared, data=lm_like, fits=store, **kw)
    assert sorted(fit_calls) == [0, 1, 2, 3]  # nothing fitted again
    monkeypatch.setattr(datasets, "load", lambda name, log=None: lm_like)
    accuracy_sweep("shakespeare-lm", tmp_path / "alone.jsonl", **kw)
    assert len(fit_calls) == 4 + 4  # without the store: one fit of every layer
    a, b = keyed(tmp_path / "alone.jsonl"), keyed(shared)
    assert len(a) == 4 and a == b  # three thresholds and gold, figure for figure
    learned = [r for r in read_records(shared) if r["method"] != "gold"]
    # A reused fit keeps the seconds the sweep's fits of the four layers took.
    assert all(r["fit_s"] > 0 for r in learned)


def test_a_fit_store_and_data_must_be_the_runs_own(tmp_path, lm_like, syn_causal):
    store = FitStore(syn_causal)
    with pytest.raises(ValueError, match="another dataset object"):
        sweep(lm_like, tmp_path / "r.jsonl", methods="window", fits=store, **QUIET)
    with pytest.raises(ValueError, match="executor='local'"):
        sweep(syn_causal, tmp_path / "r.jsonl", executor="ray", fits=store, **QUIET)
    with pytest.raises(ValueError, match="not 'shakespeare-lm'"):
        accuracy_sweep("shakespeare-lm", tmp_path / "a.jsonl", data=syn_causal, **QUIET)
    bare = dataclasses.replace(syn_causal, splits=["eval"] * len(syn_causal))
    with pytest.raises(ValueError, match="has no train split"):
        FitStore(bare).fitted(LearnedProjection(), 0)


def test_reported_configs_are_the_configurations_of_the_leaderboard_rows(tmp_path, syn_causal):
    out = tmp_path / "syn" / "records.jsonl"
    sweep(syn_causal, out, dataset="syn", methods="window;sparsefinder_distance;full", **QUIET)
    reported = reported_configs(load_records(out))
    write_leaderboard(tmp_path, formats=("csv",), log=lambda m: None)
    table = pd.read_csv(tmp_path / "syn" / "leaderboard.csv")
    assert reported == dict(zip(table["method"], table["timed_config"], strict=True))
    assert reported["full"] == "full"
    # window never reaches recall 0.95 on this data: its row reports its best-recall config
    assert reported["window"] == "window[w=27]"


def accuracy_record(method_id: str, correct: list[int], gold: list[int] | None, ident) -> dict:
    tokens = [100] * len(correct)
    acc = sum(correct) / sum(tokens)
    return {
        "kind": "accuracy",
        "dataset": "syn",
        "method": method_id.split("[")[0],
        "method_id": method_id,
        "key": record_key("syn", method_id, -1, "eval-windows=4", **ident),
        "dataset_hash": ident["data_hash"],
        "sparsebench": ident["version"],
        "split": "eval-windows=4",
        "windows": len(correct),
        "accuracy": acc,
        "delta_accuracy": None if gold is None else acc - sum(gold) / sum(tokens),
        "per_window": {"correct": correct, "tokens": tokens, "loss": [1.0] * len(correct)},
    }


def test_the_summary_shows_the_accuracy_of_each_rows_configuration(tmp_path, syn_causal):
    from sparsebench.bench.runs import append_record

    out = tmp_path / "syn" / "records.jsonl"
    sweep(syn_causal, out, dataset="syn", methods="window;full", **QUIET)
    first = read_records(out)[0]
    ident = {"data_hash": first["dataset_hash"], "version": first["sparsebench"]}
    gold = [50, 60, 55, 45]
    for mid, correct in (("gold", gold), ("window[w=27]", [40, 52, 50, 41]), ("full", gold)):
        append_record(
            tmp_path / "syn" / "accuracy.jsonl",
            accuracy_record(mid, correct, None if mid == "gold" else gold, ident),
        )
    write_leaderboard(tmp_path, formats=("csv",), log=lambda m: None)
    table = pd.read_csv(tmp_path / "syn" / "leaderboard.csv").set_index("method")
    assert math.isnan(table.loc["window", "delta_accuracy@0.95"])  # not at recall 0.95
    lines = run_summary(tmp_path).splitlines()
    row = next(line for line in lines if line.startswith("window")).split()
    assert row[1] == "—" and row[-4].startswith("-0.0") and row[-3] == "±"  # Δ with interval
    full = next(line for line in lines if line.startswith("full (reference)")).split()
    assert full[-4:-1] == ["+0.0000", "±", "0.0000"]
    assert max(len(line) for line in lines) <= 100


def test_run_scores_the_reported_configurations_with_the_sweeps_fits(
    tmp_path, lm_like, monkeypatch, capsys
):
    import sparsebench.bench.runs as runs

    folder = lm_like.save(tmp_path / "lm")
    seen = {}

    def fake_accuracy_sweep(model, out, **kw):
        seen.update(kw, model=model)
        return {"done": len(kw["only"]), "skipped": 0, "failed": 0}

    monkeypatch.setattr(runs, "accuracy_sweep", fake_accuracy_sweep)
    argv = ["run", "--data", str(folder), "--methods", "window;sparsefinder_distance"]
    assert main([*argv, "--accuracy-windows", "2", "--results", "out"]) == 0
    records = tmp_path / "out" / "shakespeare-lm" / "records.jsonl"
    assert seen["model"] == "shakespeare-lm" and seen["max_windows"] == 2
    assert sorted(seen["only"]) == sorted(reported_configs(load_records(records)).values())
    assert isinstance(seen["fits"], FitStore) and seen["fits"].data is seen["data"]
    assert "Δ accuracy" in capsys.readouterr().out


def test_commands_keep_freed_memory_where_the_c_library_is_glibc():
    import platform

    from sparsebench.bench.runs import reuse_freed_memory

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert reuse_freed_memory() is glibc
