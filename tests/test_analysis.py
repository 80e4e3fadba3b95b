"""Layer averaging, Pareto frontier and summary figures on hand-made records."""

from __future__ import annotations

import math

import pytest

from sparsebench.bench.report import layer_average, load_records, pareto_frontier, summarize
from sparsebench.bench.runs import append_record


def rec(method_id, layer, sparsity, recall, method="a", dataset="d", **params):
    return {
        "dataset": dataset,
        "method": method,
        "method_id": method_id,
        "layer": layer,
        "sparsity": sparsity,
        "recall": recall,
        "exact": 0.5,
        "params": params,
    }


@pytest.fixture
def records(tmp_path):
    path = tmp_path / "r.jsonl"
    # Method a: four configurations, two layers each (layer means given in the comments).
    for mid, (s0, r0, s1, r1) in {
        "a[t=1]": (0.4, 1.0, 0.6, 0.98),  # mean (0.5, 0.99)
        "a[t=2]": (0.8, 0.95, 0.8, 0.95),  # (0.8, 0.95)
        "a[t=3]": (0.7, 0.9, 0.7, 0.9),  # (0.7, 0.9): beaten by t=2
        "a[t=4]": (0.9, 0.4, 0.9, 0.6),  # (0.9, 0.5)
    }.items():
        append_record(path, rec(mid, 0, s0, r0, t=int(mid[4])))
        append_record(path, rec(mid, 1, s1, r1, t=int(mid[4])))
    append_record(path, rec("b", 0, 0.3, 0.8, method="b"))
    append_record(path, rec("b", 1, 0.3, 0.8, method="b"))
    with open(path, "a") as f:
        f.write('{"dataset": "d", "torn')  # a writer killed mid-line
    return path


def test_load_and_layer_average(records):
    df = load_records(records)
    assert len(df) == 10 and "param.t" in df.columns
    avg = layer_average(df)
    row = avg[avg["method_id"] == "a[t=1]"].iloc[0]
    assert row["sparsity"] == pytest.approx(0.5) and row["recall"] == pytest.approx(0.99)
    assert row["num_layers"] == 2


def test_frontier_drops_dominated_configs(records):
    front = pareto_frontier(layer_average(load_records(records)))
    a = front[front["method"] == "a"]
    assert list(a["method_id"]) == ["a[t=1]", "a[t=2]", "a[t=4]"]
    assert list(front[front["method"] == "b"]["method_id"]) == ["b"]


def test_summary_figures(records):
    s = summarize(layer_average(load_records(records))).set_index("method")
    assert s.loc["a", "sparsity@0.90"] == pytest.approx(0.8)
    assert s.loc["a", "config@0.90"] == "a[t=2]"
    assert s.loc["a", "sparsity@0.95"] == pytest.approx(0.8)
    assert s.loc["a", "sparsity@0.99"] == pytest.approx(0.5)
    assert s.loc["a", "config@0.99"] == "a[t=1]"
    # Step curve: 0.99 on [0, .5], 0.95 on (.5, .8], 0.5 on (.8, .9], 0 after.
    assert s.loc["a", "auc"] == pytest.approx(0.5 * 0.99 + 0.3 * 0.95 + 0.1 * 0.5)
    assert math.isnan(s.loc["b", "sparsity@0.90"]) and s.loc["b", "config@0.90"] == ""
    assert s.loc["b", "auc"] == pytest.approx(0.3 * 0.8)
    assert s.loc["a", "configs"] == 4
