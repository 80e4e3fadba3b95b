"""Sweeps: one record per configuration and layer, resumable after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sparsebench import datasets
from sparsebench.bench.runs import expand_grid, read_records, sweep


def test_expand_grid_uses_the_encoder_grid_on_bidirectional_data():
    assert [p["w"] for p in expand_grid("window", "paper", causal=True)][:3] == [0, 1, 3]
    assert len(expand_grid("window", "paper", causal=False)) == 22
    assert expand_grid("full", "quick", causal=False) == [{}]


def test_sweep_writes_and_skips(tmp_path):
    data = datasets.synthetic(num_seqs=6, layers=2, heads=2, n=24, d=8, seed=0)
    out = tmp_path / "r.jsonl"
    first = sweep(data, out, methods="window", grid="quick", progress=False, log=lambda m: None)
    assert first == {"done": 8, "skipped": 0, "failed": 0}  # 4 windows x 2 layers
    recs = read_records(out)
    assert {r["layer"] for r in recs} == {0, 1}
    r = recs[0]
    for field in (
        "recall",
        "sparsity",
        "exact",
        "block_sparsity",
        "git_sha",
        "torch",
        "date",
        "fit_s",
        "predict_s",
        "seed",
        "params",
        "per_head",
        "output_error",
        "per_sequence",
        "sequence_lengths",
        "by_length",
    ):
        assert field in r
    assert r["device"] == "cpu"  # where it ran, whether or not the machine has a GPU
    again = sweep(data, out, methods="window", grid="quick", progress=False, log=lambda m: None)
    assert again == {"done": 0, "skipped": 8, "failed": 0}
    assert len(read_records(out)) == 8


SLOW = textwrap.dedent(
    """
    import sys, time
    from dataclasses import dataclass
    from typing import ClassVar
    from sparsebench import datasets
    from sparsebench.bench.runs import sweep
    from sparsebench.methods import Band, Graph, Method, Tags, register, predict_time

    @register("slow_band")
    @dataclass(kw_only=True)
    class SlowBand(Method):
        '''A band that takes its time.'''
        w: int = predict_time(1)
        grid: ClassVar = {"quick": {"w": list(range(12))}}
        tags: ClassVar[Tags] = Tags()

        def _predict(self, q, k, *, lengths, causal):
            time.sleep(0.15)
            return Graph((*q.shape[:3], k.shape[2]), [Band(-self.w, self.w)])

    data = datasets.synthetic(num_seqs=4, layers=1, heads=2, n=16, d=8, seed=0)
    sweep(data, sys.argv[1], methods="slow_band", progress=False, log=lambda m: None)
    """
)


def test_kill_9_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "r.jsonl"
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    proc = subprocess.Popen([sys.executable, str(script), str(out)])
    deadline = time.time() + 60
    while time.time() < deadline:
        if out.exists() and len(read_records(out)) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(read_records(out))
    assert 3 <= partial < 12, "killed mid-sweep"
    # Simulate the worst case too: a record torn by the kill.
    with open(out, "a") as f:
        f.write('{"key": "torn')
    subprocess.run([sys.executable, str(script), str(out)], check=True)
    recs = read_records(out)
    keys = [r["key"] for r in recs]
    assert len(keys) == 12 and len(set(keys)) == 12
    assert out.read_text().count("\n") == 12


def test_every_record_equals_a_direct_evaluation_of_its_configuration(tmp_path):
    # Shared fits, shared base predictions and shared gold figures must not change a record:
    # each one equals evaluating its own configuration from scratch (predict-time parameters
    # of learned and of non-learned methods alike).
    from sparsebench import methods
    from sparsebench.bench.evaluate import evaluate_layer

    data = datasets.synthetic(num_seqs=6, layers=1, heads=2, n=24, d=8, causal=True, seed=2)
    out = tmp_path / "r.jsonl"
    globs = ["window", "bigbird", "sparsefinder_distance", "dsa"]
    for g in globs:
        sweep(data, out, methods=g, grid="quick", progress=False, log=lambda m: None)
    recs = read_records(out)
    assert {r["method"] for r in recs} == set(globs)
    ev, train = data.split("eval"), data.split("train")
    seen = set()
    for r in recs:
        m = methods.create(r["method"], **r["params"])
        if m.learns:
            m = m.fit(train, 0)
        direct = evaluate_layer(m, ev, 0, block_size=64)
        for key in ("recall", "sparsity", "exact", "mass_recall"):
            assert r[key] == direct[key] or (r[key] != r[key] and direct[key] != direct[key]), (
                r["method_id"],
                key,
            )
        seen.add((r["method"], round(r["sparsity"], 9)))
    # Different predict-time parameters give different graphs.
    assert len({s for name, s in seen if name == "window"}) == 4
    assert len({s for name, s in seen if name == "sparsefinder_distance"}) == 3


@pytest.mark.parametrize("alpha", [1.3, 2.0])
def test_gold_row_takes_the_datasets_alpha(tmp_path, alpha):
    # The gold row predicts with the data's alpha (Method.for_data), in a sweep and in evaluate:
    # it is the gold graph itself, whatever the alpha.
    from sparsebench import methods
    from sparsebench.bench import evaluate

    data = datasets.synthetic(num_seqs=6, layers=2, heads=2, n=24, d=8, alpha=alpha, seed=4)
    out = tmp_path / "r.jsonl"
    res = sweep(data, out, methods="gold", grid="quick", progress=False, log=lambda m: None)
    assert res == {"done": 2, "skipped": 0, "failed": 0}
    for r in read_records(out):
        assert r["method_id"] == "gold"  # the record keeps the configuration as asked for
        assert r["recall"] == 1.0 and r["exact"] == 1.0
        assert r["sparsity"] == r["gold_sparsity"]
    m = evaluate(data, methods.create("gold"))["metrics"]
    assert m["recall"] == 1.0 and m["sparsity"] == m["gold_sparsity"]


def test_each_fit_group_is_fitted_once_and_members_keep_their_predict_params():
    from sparsebench import methods
    from sparsebench.bench.runs import Fitted, fit_once, group_by_fit, with_predict_params

    data = datasets.synthetic(num_seqs=6, layers=1, heads=2, n=24, d=8, seed=0)
    configs = [methods.create("window", w=w) for w in (1, 3)] + [
        methods.create("sparsefinder_distance", **p)
        for p in expand_grid("sparsefinder_distance", "quick", causal=False)
    ]
    groups = group_by_fit(configs)
    assert [len(g) for g in groups] == [2, 3]
    fits = []

    def fit(m):
        fits.append(m.id)
        return m.clone().fit(data.split("train"), 0)

    out = [f for group in fit_once(configs, data, fit, with_predict_params) for f in group]
    assert len(fits) == 1  # one fit for the three thresholds; the windows learn nothing
    assert all(isinstance(f, Fitted) and f.error is None for f in out)
    assert [f.config for f in out] == configs
    assert out[0].state is None and out[0].method.get_params() == configs[0].get_params()
    for f in out[2:]:
        assert f.state.get_params() == f.config.get_params() and f.fit_s > 0


def test_a_failed_fit_fails_its_group_only(tmp_path):
    data = datasets.synthetic(num_seqs=6, layers=1, heads=2, n=24, d=8, seed=0)
    solo = data.split("eval")  # no train split: learned methods cannot fit
    out = tmp_path / "r.jsonl"
    quiet = {"progress": False, "log": lambda m: None}
    res = sweep(solo, out, methods="sparsefinder_distance", grid="quick", **quiet)
    assert res == {"done": 0, "skipped": 0, "failed": 3}
    res = sweep(solo, out, methods="window", grid="quick", **quiet)
    assert res["done"] == 4 and res["failed"] == 0


def test_sweep_checks_split_layers_and_methods_before_writing(tmp_path):
    data = datasets.synthetic(num_seqs=4, layers=2, heads=2, n=16, d=8, seed=0)
    out = tmp_path / "r.jsonl"
    quiet = {"progress": False, "log": lambda m: None}
    train_only = data.select([0, 1])
    train_only.splits = ["train", "train"]
    with pytest.raises(ValueError, match="no split 'eval'; its splits are train"):
        sweep(train_only, out, methods="window", **quiet)
    with pytest.raises(ValueError, match="out of range"):
        sweep(data, out, methods="window", layers=[-1], **quiet)
    with pytest.raises(ValueError, match="given twice"):
        sweep(data, out, methods="window", layers=[1, 1], **quiet)
    with pytest.raises(ValueError, match="did you mean 'window'"):
        sweep(data, out, methods="windw", **quiet)
    with pytest.raises(ValueError, match="invalid dataset name"):
        sweep(data, out, dataset="../x", methods="window", **quiet)
    assert not out.exists()
