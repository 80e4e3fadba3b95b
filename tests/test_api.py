"""The Python API: sparsebench.__version__ and sparsebench.results (records as DataFrames)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from importlib.metadata import version

import pandas as pd
import pytest

import sparsebench
from sparsebench import results
from sparsebench.bench.report import load_reports

DATA = "tiny-lm"
HASH = "abc123"
# (method, method_id, params, per-layer (sparsity, recall)) of a two-layer sweep.
CONFIGS = [
    ("window", "window[w=3]", {"w": 3}, [(0.90, 0.80), (0.92, 0.84)]),
    ("window", "window[w=9]", {"w": 9}, [(0.70, 0.96), (0.72, 0.98)]),
    ("window", "window[w=5]", {"w": 5}, [(0.60, 0.90), (0.62, 0.92)]),  # beaten by w=9
    ("bigbird", "bigbird[num_random=1]", {"num_random": 1}, [(0.50, 0.97), (0.52, 0.95)]),
    ("gold", "gold", {"alpha": 1.5}, [(0.95, 1.0), (0.93, 1.0)]),
]


def graph_record(method, method_id, params, layer, sparsity, recall, *, data_hash=HASH, day=2):
    return {
        "key": f"{DATA}|{method_id}|layer={layer}|eval|data={data_hash}|v=0.1.0",
        "dataset": DATA,
        "dataset_hash": data_hash,
        "sparsebench": "0.1.0",
        "date": f"2026-11-0{day}T10:00:00+00:00",
        "git_sha": "0" * 40,
        "device": "cpu",
        "cpu": "x86_64",
        "method": method,
        "method_id": method_id,
        "params": params,
        "layer": layer,
        "split": "eval",
        "recall": recall,
        "sparsity": sparsity,
        "exact": recall / 2,
        "precision": 0.5,
        "mass_recall": recall,
        "block_sparsity": sparsity / 2,
        "gold_sparsity": 0.94,
        "fit_s": 0.1,
        "predict_s": 0.002,
        "num_sequences": 3,
        "per_sequence": {"recall": [recall] * 3, "sparsity": [sparsity] * 3},
        "per_head": {"recall": [recall, recall]},
    }


def accuracy_record(method, method_id, params, accuracy):
    return {
        "key": f"{DATA}|{method_id}|layer=-1|eval-windows=2|data={HASH}|v=0.1.0",
        "kind": "accuracy",
        "dataset": DATA,
        "dataset_hash": HASH,
        "sparsebench": "0.1.0",
        "date": "2026-11-02T11:00:00+00:00",
        "method": method,
        "method_id": method_id,
        "params": params,
        "split": "eval-windows=2",
        "windows": 2,
        "task": "next-token",
        "accuracy": accuracy,
        "delta_accuracy": accuracy - 0.5,
        "loss": 2.0,
        "tokens": 1024,
    }


def speed_record(spec, method, n, seconds):
    return {
        "suite": "execute",
        "spec": spec,
        "method": method,
        "params": {"w": 9} if method == "window" else {},
        "n": n,
        "normalizer": "softmax",
        "path": "block" if method == "window" else "auto",
        "block_size": 64,
        "device": "cpu",
        "date": "2026-11-02T12:00:00+00:00",
        "sparsebench": "0.1.0",
        "end_to_end": {"median_s": seconds, "iqr_s": seconds / 10, "min_s": seconds * 0.9},
        "peak_mb": 10.0,
    }


def write_lines(path, records, packed=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    if packed:
        with gzip.open(path.with_name(path.name + ".gz"), "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


@pytest.fixture
def folder(tmp_path):
    """A results folder: a sweep of two layers, accuracy of three configurations, speed."""
    root = tmp_path / "results"
    graph = [
        graph_record(m, mid, p, layer, s, r)
        for m, mid, p, per_layer in CONFIGS
        for layer, (s, r) in enumerate(per_layer)
    ]
    write_lines(root / DATA / "records.jsonl", graph[:4], packed=True)  # published, packed
    write_lines(root / DATA / "records.jsonl", graph[4:])
    write_lines(
        root / DATA / "accuracy.jsonl",
        [
            accuracy_record("gold", "gold", {"alpha": 1.5}, 0.5),
            accuracy_record("window", "window[w=9]", {"w": 9}, 0.45),
            accuracy_record("bigbird", "bigbird[num_random=1]", {"num_random": 1}, 0.40),
        ],
    )
    write_lines(
        root / "speed" / "records.jsonl",
        [
            speed_record("sdpa", "sdpa", 1024, 0.10),
            speed_record("window:w=9", "window", 1024, 0.02),
        ],
    )
    return root


def test_version_is_the_installed_distributions():
    assert sparsebench.__version__ == version("sparsebench")


def test_import_sparsebench_is_cheap_and_subpackages_load_on_use():
    code = (
        "import sys, sparsebench\n"
        "print(sorted(m for m in sys.modules if m.startswith('sparsebench')))\n"
        "print(callable(sparsebench.results.load), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == "['sparsebench']"
    assert second == "True True"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sparsebench.nope  # noqa: B018


def test_load_a_results_folder_as_a_tidy_frame(folder):
    df = results.load(folder)
    assert list(df.columns[:5]) == ["kind", "dataset", "dataset_hash", "method", "method_id"]
    assert df["kind"].value_counts().to_dict() == {"graph": 10, "accuracy": 3, "speed": 2}
    params = [c for c in df.columns if c.startswith("param.")]
    assert params == ["param.alpha", "param.num_random", "param.w"]
    after = list(df.columns[5 + len(params) :])
    assert after[:4] == ["layer", "split", "recall", "sparsity"]
    assert "sparsebench" in df and "per_head" not in df and "params" not in df
    g = df[df["kind"] == "graph"]
    assert sorted(g["layer"].unique()) == [0, 1]
    w9 = g[(g["method_id"] == "window[w=9]") & (g["layer"] == 1)].iloc[0]
    assert (w9["param.w"], w9["sparsity"], w9["recall"]) == (9, 0.72, 0.98)
    assert w9["per_sequence"]["recall"] == [0.98] * 3  # kept whole, for intervals
    sp = df[df["kind"] == "speed"].set_index("spec")
    assert sp.loc["sdpa", "end_to_end.median_s"] == 0.10  # timings as columns
    assert "end_to_end" not in df
    assert df[df["kind"] == "accuracy"]["accuracy"].max() == 0.5


def test_load_a_run_folder_a_dataset_folder_and_single_files(folder, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "20261130-091500-sweep"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    write_lines(
        run / DATA / "records.jsonl", [graph_record("window", "window[w=3]", {"w": 3}, 0, 0.9, 0.8)]
    )
    assert len(results.load(run)) == 1
    monkeypatch.chdir(tmp_path)
    assert len(results.load("20261130-091500-sweep")) == 1  # the name `sparsebench run` prints
    assert set(results.load(folder / DATA)["kind"]) == {"graph", "accuracy"}
    packed = results.load(folder / DATA / "records.jsonl.gz")
    assert len(packed) == 10 and set(packed["kind"]) == {"graph"}  # with the plain file
    assert set(results.load(folder / DATA / "accuracy.jsonl")["kind"]) == {"accuracy"}
    assert set(results.load(folder / "speed" / "records.jsonl")["kind"]) == {"speed"}


def test_old_records_get_their_split_from_the_key(tmp_path):
    rec = graph_record("window", "window[w=3]", {"w": 3}, 0, 0.9, 0.8)
    del rec["split"], rec["dataset_hash"]
    write_lines(tmp_path / DATA / "records.jsonl", [rec])
    df = results.load(tmp_path)
    assert df["split"].tolist() == ["eval"]


@pytest.mark.parametrize("what", ["missing", "empty"])
def test_load_refuses_a_path_without_records(tmp_path, what):
    path = tmp_path / "nothing" if what == "missing" else tmp_path
    with pytest.raises(ValueError, match="no records at .*results folder, a run folder"):
        results.load(path)


def test_frontier_per_dataset_and_method_on_layer_averages(folder):
    front = results.frontier(results.load(folder))
    window = front[front["method"] == "window"]
    assert window["method_id"].tolist() == ["window[w=9]", "window[w=3]"]  # w=5 is beaten
    assert window["sparsity"].tolist() == pytest.approx([0.71, 0.91])
    assert window["recall"].tolist() == pytest.approx([0.97, 0.82])
    assert set(front["method"]) == {"window", "bigbird", "gold"}
    exact = results.frontier(results.load(folder), x="block_sparsity", y="exact")
    assert exact[exact["method"] == "window"]["block_sparsity"].is_monotonic_increasing


@pytest.mark.parametrize(("x", "y"), [("output_error", "recall"), ("sparsity", "nope")])
def test_frontier_refuses_an_axis_that_is_not_a_higher_is_better_metric(folder, x, y):
    with pytest.raises(ValueError, match="frontier axis .* use one of .*recall"):
        results.frontier(results.load(folder), x=x, y=y)


def test_frontier_keeps_each_datasets_newest_build(folder):
    old = graph_record("window", "window[w=5]", {"w": 5}, 0, 0.99, 0.99, data_hash="old", day=1)
    with (folder / DATA / "records.jsonl").open("a") as f:
        f.write(json.dumps(old) + "\n")
    with pytest.warns(UserWarning, match="left out 1 records of other dataset builds"):
        front = results.frontier(results.load(folder))
    assert "window[w=5]" not in set(front["method_id"])  # the old build is not averaged in


def test_leaderboard_is_the_table_sparsebench_leaderboard_computes(folder):
    table = results.leaderboard(results.load(folder))
    reports, _ = load_reports(folder)
    expected = pd.concat([r.table.assign(dataset=r.dataset) for r in reports], ignore_index=True)
    pd.testing.assert_frame_equal(table, expected[table.columns])
    assert table.columns[0] == "dataset"
    top = table.iloc[0]
    assert top["method"] == "window" and top["sparsity@0.95"] == pytest.approx(0.71)
    assert top["accuracy@0.95"] == pytest.approx(0.45)  # accuracy of the recall-0.95 config
    assert top["speed_x_dense"] == pytest.approx(0.2)  # from the speed records
    assert table["reference"].tolist()[-1]  # reference rows last


def test_leaderboard_of_a_filtered_frame(folder):
    df = results.load(folder)
    graph = (df["kind"] == "graph") & df["method"].isin(["window", "gold"])
    table = results.leaderboard(df[graph | (df["kind"] == "speed")])
    assert table["method"].tolist() == ["window", "gold"]
    assert pd.isna(table.iloc[0]["accuracy@0.95"])  # no accuracy rows were passed
    assert table.iloc[0]["speed_x_dense"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no graph records"):
        results.leaderboard(df[df["kind"] == "speed"])


def test_readme_dataframe_example_runs(folder, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "results.load" in b)
    monkeypatch.chdir(folder.parent)  # the example reads ./results
    ns: dict = {}
    exec(block.replace("shakespeare-lm", DATA), ns)
    assert ns["board"]["name"].tolist()[0] == "window"
    assert set(ns["front"]["method_id"]) >= {"window[w=9]", "window[w=3]"}
    assert len(ns["lm"]) == 10
