"""Predicted graphs replacing attention in the bundled models."""

from __future__ import annotations

from functools import cache

import pytest

from sparsebench import methods
from sparsebench.bench.runs import restrict_with
from sparsebench.datasets.shakespeare import load_model, load_tokenizer
from sparsebench.datasets.train import evaluate_model, token_streams

MODELS = ["shakespeare-lm", "shakespeare-mlm"]
WINDOWS = 4  # held-out windows of 512 tokens


@cache
def streams():
    return token_streams(load_tokenizer())["eval"]


def score(name, method=None):
    model = load_model(name)
    restrict = None
    if method is not None:
        restrict = restrict_with([method] * model.cfg.n_layers)
    return evaluate_model(model, streams(), restrict=restrict, max_windows=WINDOWS)


@pytest.mark.parametrize("name", MODELS)
def test_gold_and_covering_window_equal_full_attention(name):
    full = score(name)
    gold = score(name, methods.create("gold"))
    assert gold["loss"] == full["loss"] and gold["accuracy"] == full["accuracy"]
    wide = score(name, methods.create("window", w=2 * 512 + 1))
    assert wide["loss"] == full["loss"] and wide["accuracy"] == full["accuracy"]


@pytest.mark.parametrize("name", MODELS)
def test_accuracy_falls_as_the_window_narrows(name):
    # Sparser windows lose accuracy and raise the loss (on the same fixed held-out windows).
    by_w = {w: score(name, methods.create("window", w=w)) for w in (1, 3, 9, 33)}
    acc = [by_w[w]["accuracy"] for w in (1, 3, 9)]
    loss = [by_w[w]["loss"] for w in (1, 3, 9, 33)]
    assert acc == sorted(acc) and acc[0] < acc[-1]
    assert loss == sorted(loss, reverse=True)
    assert by_w[1]["accuracy"] < score(name)["accuracy"]


def test_configurations_sharing_a_fit_score_as_if_fitted_alone(tmp_path, monkeypatch):
    from sparsebench import datasets
    from sparsebench.bench.runs import accuracy_sweep, read_records

    # Small stand-in Q/K data with the model's shape (4 layers, heads of 64) to fit on.
    syn = datasets.synthetic(layers=4, heads=4, d=64, n=48, causal=True, seed=3)
    monkeypatch.setattr(datasets, "load", lambda name, log=None: syn)
    out = tmp_path / "accuracy.jsonl"
    res = accuracy_sweep(
        "shakespeare-lm",
        out,
        methods="sparsefinder_distance",
        grid="quick",
        max_windows=1,
        progress=False,
        log=lambda m: None,
    )
    recs = [r for r in read_records(out) if r["method"] != "gold"]
    assert res["failed"] == 0 and len(recs) == 3
    assert len({r["accuracy"] for r in recs}) > 1  # the thresholds really differ
    model, train = load_model("shakespeare-lm"), syn.split("train")
    for r in recs:
        m = methods.create(r["method"], **r["params"])
        alone = [m.clone().fit(train, i) for i in range(4)]
        direct = evaluate_model(model, streams(), restrict=restrict_with(alone), max_windows=1)
        assert (r["loss"], r["accuracy"]) == (direct["loss"], direct["accuracy"]), r["method_id"]


def test_a_dataset_without_a_task_is_refused(tmp_path):
    from sparsebench.bench.runs import accuracy_sweep

    with pytest.raises(ValueError, match="no task to score.*shakespeare-lm"):
        accuracy_sweep("synthetic-bidir", tmp_path / "a.jsonl", progress=False, log=print)
