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


# Intervals from hand-made records with per-sequence values (the shared record interface).

METRICS7 = ("recall", "sparsity", "exact", "precision", "mass_recall", "block_sparsity")


def seq_rec(method_id, layer, values, method="a", lengths=None, **scalars):
    """A record whose per_sequence holds ``values`` for every interval metric."""
    per = {m: list(values) for m in METRICS7}
    per["output_error"] = [None if v is None else 1 - v for v in values]
    clean = [v for v in values if v is not None]
    mean = sum(clean) / len(clean)
    return {
        "dataset": "d",
        "method": method,
        "method_id": method_id,
        "layer": layer,
        **{m: mean for m in METRICS7},
        "output_error": 1 - mean,
        "per_sequence": per,
        "sequence_lengths": lengths or [10 * (i + 1) for i in range(len(values))],
        "params": {},
        **scalars,
    }


@pytest.fixture
def seq_records(tmp_path):
    path = tmp_path / "s.jsonl"
    append_record(path, seq_rec("a[t=1]", 0, [0.9, 0.8, None, 0.7, 0.95]))
    append_record(path, seq_rec("a[t=1]", 1, [0.5, 0.6, 0.65, 0.4, 0.9]))
    append_record(path, seq_rec("a[t=2]", 0, [0.3, 0.2, 0.25, 0.1, 0.15]))
    append_record(path, seq_rec("a[t=2]", 1, [0.35, 0.3, 0.2, 0.1, 0.05]))
    # A configuration from before intervals existed: figures, no per_sequence.
    append_record(path, rec("old", 0, 0.5, 0.5, method="b"))
    append_record(path, rec("old", 1, 0.5, 0.5, method="b"))
    return load_records(path)


def test_intervals_equal_the_stats_functions(seq_records):
    import numpy as np

    from sparsebench.bench import stats
    from sparsebench.bench.report import INTERVAL_METRICS, with_intervals

    avg = with_intervals(layer_average(seq_records), seq_records, reps=200, seed=3)
    index = stats.bootstrap_indices(5, reps=200, seed=3)  # one set of resamples per dataset
    for mid in ("a[t=1]", "a[t=2]"):
        recs = seq_records[seq_records["method_id"] == mid].sort_values("layer")
        row = avg[avg["method_id"] == mid].iloc[0]
        for m in INTERVAL_METRICS:
            per = [[np.nan if v is None else v for v in p[m]] for p in recs["per_sequence"]]
            lo, hi = stats.macro_interval(per, index=index)
            assert row[f"{m}_lo"] == pytest.approx(lo, abs=1e-12)
            assert row[f"{m}_hi"] == pytest.approx(hi, abs=1e-12)
            assert row[f"{m}_lo"] <= row[m] <= row[f"{m}_hi"]
    old = avg[avg["method_id"] == "old"].iloc[0]
    assert math.isnan(old["recall_lo"]) and math.isnan(old["recall_hi"])  # never a made-up one
    assert old["recall"] == pytest.approx(0.5)


def test_intervals_resample_sequences_across_layers_together():
    """Layers that move in opposite directions per sequence cancel within each resample."""
    import numpy as np

    from sparsebench.bench import stats
    from sparsebench.bench.report.intervals import bounds, macro_resamples, resample_counts

    values = np.array([[[0.1, 0.9, 0.3, 0.7], [0.9, 0.1, 0.7, 0.3]]])  # layer 1 = 1 - layer 0
    counts = resample_counts(stats.bootstrap_indices(4, reps=300, seed=0), 4)
    lo, hi = bounds(macro_resamples(values, counts))
    assert lo[0] == pytest.approx(0.5) and hi[0] == pytest.approx(0.5)


def test_by_length_table_bins_and_intervals(seq_records):
    import numpy as np

    from sparsebench.bench import stats
    from sparsebench.bench.report import by_length_table

    lengths = [100, 128, 129, 300, 256]
    path_records = seq_records.copy()
    path_records["sequence_lengths"] = [lengths] * len(path_records)
    t = by_length_table(path_records, {"a": "a[t=1]"}, reps=200, seed=0)
    assert list(t["bin"]) == ["0-128", "128-256", "256-384"]
    assert list(t["num_sequences"]) == [2, 2, 1]  # 1..128, 129..256, 257..384 tokens
    assert set(t["method_id"]) == {"a[t=1]"}
    # Bin 128-256 holds sequences 2 and 4: layer 0 [None, 0.95], layer 1 [0.65, 0.9].
    row = t[t["bin"] == "128-256"].iloc[0]
    assert row["recall"] == pytest.approx((0.95 + (0.65 + 0.9) / 2) / 2)
    per = np.array([[np.nan, 0.95], [0.65, 0.9]])
    lo, hi = stats.macro_interval(per, index=stats.bootstrap_indices(2, reps=200, seed=0))
    assert (row["recall_lo"], row["recall_hi"]) == pytest.approx((lo, hi))
    # Records whose by_length counts put a 128-token sequence in 128-256 follow that rule.
    lower = {"0-128": {"num_sequences": 1}, "128-256": {"num_sequences": 2}}
    lower["256-384"] = {"num_sequences": 2}
    path_records["by_length"] = [lower] * len(path_records)
    t = by_length_table(path_records, {"a": "a[t=1]"}, reps=50)
    assert list(t["num_sequences"]) == [1, 2, 2]
    # Recall-0.95 configurations of a summary frame: method a reaches none here.
    s = summarize(layer_average(path_records))
    assert by_length_table(path_records, s[s["method"] == "a"]).empty


def test_accuracy_intervals_over_windows_and_paired():
    from sparsebench.bench import stats
    from sparsebench.bench.report.intervals import accuracy_intervals

    tokens = [10, 12, 8, 10]
    gold = {"method_id": "gold", "per_window": {"correct": [5, 6, 4, 5], "tokens": tokens}}
    mine = {
        "method_id": "w",
        "per_window": {"correct": [4, 6, 3, 5], "tokens": tokens},
        "num_tokens": 40,
    }
    old = {"method_id": "o", "accuracy": 0.4, "tokens": 4096}
    out = accuracy_intervals([gold, mine, old], reps=300, seed=1)
    lo, hi = stats.ratio_interval([4, 6, 3, 5], tokens, reps=300, seed=1)
    assert (out["w"]["accuracy_lo"], out["w"]["accuracy_hi"]) == (lo, hi)
    dlo, dhi = stats.paired_ratio_delta_interval(
        [4, 6, 3, 5], [5, 6, 4, 5], tokens, reps=300, seed=1
    )
    assert (out["w"]["delta_accuracy_lo"], out["w"]["delta_accuracy_hi"]) == (dlo, dhi)
    assert out["w"]["tokens"] == 40 and out["o"]["tokens"] == 4096
    assert math.isnan(out["o"]["accuracy_lo"]) and math.isnan(out["gold"]["delta_accuracy_lo"])
