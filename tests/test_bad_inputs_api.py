"""Bad inputs to the Python API: each is refused with one line naming the problem.

The corpus of issue 15 (item 7), API part: α, normalisers and paths, method parameters,
dtypes, evaluate's layers and split, and speed cases. Every case asserts the exception type and
a one-line message that names the problem; the half-precision cases assert that the result
equals the float32 one instead of an error. None of these entries writes files.
"""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch

from sparsebench import datasets, methods
from sparsebench.bench import (
    Graph,
    dense_attention,
    evaluate,
    execute,
    gold_graph,
    graph_metrics,
    measure_case,
    output_error,
    prepare,
    validate_case,
)
from sparsebench.methods import attention_probs
from sparsebench.methods.gold import gold_rows


@cache
def data():
    return datasets.synthetic(num_seqs=4, layers=2, heads=2, n=16, d=8, seed=0)


def layer():
    return data().layer(0)


def full_graph(q, k):
    B, H, N, _ = q.shape
    return Graph((B, H, N, k.shape[2]), [methods.Band(-N, k.shape[2])])


def raises_one_line(exc, fn, *words):
    """``fn()`` raises ``exc`` with a one-line message containing every word of ``words``."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value.args[0]) if info.value.args else str(info.value)
    assert "\n" not in msg.strip(), msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


# -- α ------------------------------------------------------------------------------------------
BAD_ALPHAS = {"alpha_1": 1.0, "alpha_nan": math.nan, "alpha_inf": math.inf, "alpha_0.5": 0.5}


@pytest.mark.parametrize("alpha", list(BAD_ALPHAS.values()), ids=list(BAD_ALPHAS))
@pytest.mark.parametrize("entry", ["gold_graph", "execute", "output_error"])
def test_alpha_must_be_finite_and_above_one(entry, alpha):
    lay = layer()
    q, k, v = lay.q, lay.k, lay.v
    calls = {
        "gold_graph": lambda: gold_graph(q, k, alpha=alpha),
        "execute": lambda: execute(q, k, v, full_graph(q, k), alpha=alpha),
        "output_error": lambda: output_error(q, k, v, full_graph(q, k), alpha=alpha),
    }
    raises_one_line(ValueError, calls[entry], "alpha", "> 1")


@pytest.mark.parametrize(
    "call",
    [
        lambda q, k, v: dense_attention(q, k, v, full_graph(q, k), alpha=1),
        lambda q, k, v: attention_probs(q @ k.transpose(-1, -2), "entmax", float("nan")),
        lambda q, k, v: gold_rows(q, k, alpha=0.9),
        lambda q, k, v: methods.create("gold", alpha=1.0),
        lambda q, k, v: methods.from_spec("gold:alpha=inf"),
    ],
    ids=["dense_attention", "attention_probs", "gold_rows", "gold_row_create", "gold_row_spec"],
)
def test_alpha_checked_at_every_other_entry(call):
    lay = layer()
    raises_one_line(ValueError, lambda: call(lay.q, lay.k, lay.v), "alpha")


# -- normaliser, path, block size ------------------------------------------------------------
@pytest.mark.parametrize(
    "call, words",
    [
        (lambda q, k, v, g: execute(q, k, v, g, normalizer="sparsemax"), ["normalizer", "softmax"]),
        (lambda q, k, v, g: dense_attention(q, k, v, g, normalizer="soft"), ["normalizer"]),
        (lambda q, k, v, g: execute(q, k, v, g, path="sparse"), ["unknown path", "block"]),
        (lambda q, k, v, g: prepare(g, block_size=0), ["block_size", "positive"]),
        (lambda q, k, v, g: execute(q, k, v, g, block_size=-4), ["block_size"]),
        (lambda q, k, v, g: execute(q, k, v, "window"), ["Plan or a Graph"]),
        (lambda q, k, v, g: graph_metrics(g, g, block_size=0), ["block_size"]),
    ],
    ids=[
        "execute_unknown_normalizer",
        "dense_unknown_normalizer",
        "execute_unknown_path",
        "prepare_block_size_0",
        "execute_negative_block_size",
        "execute_not_a_graph",
        "metrics_block_size_0",
    ],
)
def test_execution_arguments(call, words):
    lay = layer()
    raises_one_line(ValueError, lambda: call(lay.q, lay.k, lay.v, full_graph(lay.q, lay.k)), *words)


# -- method parameters ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: methods.create("sparsefinder_distance", t=float("nan")), ["t", "finite"]),
        (lambda: methods.create("sparsefinder_kmeans", num_clusters=0), ["num_clusters", ">= 1"]),
        (lambda: methods.from_spec("sparsefinder_blocks:block_size=0"), ["block_size", ">= 1"]),
        (lambda: methods.create("sparsefinder_kmeans").clone(runs=0), ["runs", ">= 1"]),
        (lambda: methods.create("sparsefinder_kmeans", top_clusters=9), ["top_clusters", "9"]),
        (lambda: methods.create("reformer", n_buckets=5), ["n_buckets", "even"]),
        (lambda: methods.create("reformer", n_hashes=0), ["n_hashes"]),
        (lambda: methods.create("topk_oracle", k=0), ["k must be"]),
        (lambda: methods.create("dsa", density=1.5), ["density", "[0, 1]"]),
        (lambda: methods.create("dsa", sigma=-0.1), ["sigma", "> 0"]),
        (lambda: methods.create("window", w=-1), ["w must be", ">= 0"]),
        (lambda: methods.create("window", global_tokens=3), ["global_tokens", "0, 1, 2"]),
        (lambda: methods.create("sparsefinder_quantize", mode="fix"), ["mode", "'fixed'"]),
        (lambda: methods.create("routing_trained", decay=float("inf")), ["decay"]),
        (lambda: methods.create("bigbird", num_random=2.5), ["num_random", "integer"]),
        (lambda: methods.create("sparsefinder_distance", lr=0.0), ["lr", "> 0"]),
    ],
    ids=[
        "t_nan",
        "num_clusters_0",
        "spec_block_size_0",
        "clone_runs_0",
        "top_clusters_over_num_clusters",
        "n_buckets_odd",
        "n_hashes_0",
        "topk_k_0",
        "density_above_1",
        "sigma_negative",
        "window_negative",
        "global_tokens_3",
        "mode_typo",
        "decay_inf",
        "count_not_integer",
        "lr_0",
    ],
)
def test_method_parameters_are_checked_at_construction(make, words):
    raises_one_line(ValueError, make, *words)


def test_parameter_set_after_construction_is_checked_before_predict():
    m = methods.create("window")
    m.w = -3
    lay = layer()
    raises_one_line(ValueError, lambda: m.predict(lay.q, lay.k), "w must be")


# -- dtypes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, words",
    [
        (lambda q, k, v: gold_graph(q.to(torch.complex64), k), ["q", "complex"]),
        (lambda q, k, v: gold_graph(q, (k * 10).to(torch.int32)), ["k", "torch.int32"]),
        (lambda q, k, v: methods.create("window").predict(q.long(), k.long()), ["q", "int64"]),
        (lambda q, k, v: execute(q, k, v.to(torch.complex64), full_graph(q, k)), ["v", "complex"]),
        (lambda q, k, v: output_error(q, k, v.int(), full_graph(q, k)), ["v", "int32"]),
        (lambda q, k, v: gold_graph(q.double(), k), ["dtype", "float64"]),
    ],
    ids=[
        "gold_complex_q",
        "gold_int_k",
        "predict_int_qk",
        "execute_complex_v",
        "output_error_int_v",
        "gold_mixed_dtypes",
    ],
)
def test_integer_and_complex_inputs_are_rejected(call, words):
    lay = layer()
    raises_one_line(ValueError, lambda: call(lay.q, lay.k, lay.v), *words)


def _overflowing():
    """Half-precision q/k whose scores overflow float16 (|q·k/√d| far above 65504)."""
    lay = layer()
    q, k = (lay.q * 100).half(), (lay.k * 100).half()
    scores = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])
    assert scores.abs().max() > 2 * torch.finfo(torch.float16).max
    return q, k, lay.v.half(), lay.lengths


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_is_scored_in_float32(dtype):
    q, k, v, lengths = _overflowing()
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    q32, k32, v32 = q.float(), k.float(), v.float()
    gold = gold_graph(q, k, lengths=lengths, with_probs=True)
    gold32 = gold_graph(q32, k32, lengths=lengths, with_probs=True)
    assert torch.equal(gold.to_dense(), gold32.to_dense())
    m = graph_metrics(gold, gold32, probs=gold32)
    assert m["recall"] == 1.0 and m["gold_sparsity"] < 1.0
    oracle = methods.create("topk_oracle", k=3)
    pred = oracle.predict(q, k, lengths=lengths)
    assert torch.equal(pred.to_dense(), oracle.predict(q32, k32, lengths=lengths).to_dense())
    assert not math.isnan(graph_metrics(pred, gold)["recall"])
    out = execute(q, k, v, gold)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert torch.allclose(out.float(), execute(q32, k32, v32, gold32).to(dtype).float())
    assert math.isfinite(output_error(q, k, v, pred, lengths=lengths)["output_error"])


# -- evaluate -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"split": "evl"}, ["no split 'evl'", "train, eval"]),
        ({"layers": [-1]}, ["layer -1", "0 to 1", "negative"]),
        ({"layers": [2]}, ["layer 2", "out of range"]),
        ({"layers": []}, ["no layers"]),
        ({"layers": [0, 0]}, ["twice"]),
        ({"batch_size": 0}, ["batch_size", "positive"]),
        ({"block_size": -8}, ["block_size"]),
    ],
    ids=[
        "split_typo",
        "negative_layer",
        "layer_out_of_range",
        "no_layers",
        "layer_twice",
        "batch_0",
        "block_neg",
    ],
)
def test_evaluate_arguments(kwargs, words):
    window = methods.create("window")
    raises_one_line(ValueError, lambda: evaluate(data(), window, **kwargs), *words)


def test_evaluate_never_scores_every_sequence_when_the_split_is_missing():
    train_only = data().split("train")
    msg = raises_one_line(
        ValueError, lambda: evaluate(train_only, methods.create("window")), "no split 'eval'"
    )
    assert "train" in msg
    # Scoring every sequence is possible, but only when asked for.
    assert evaluate(train_only, methods.create("window"), split=None, layers=[0])["metrics"]


# -- speed cases --------------------------------------------------------------------------------
CASE = {"method": "window", "n": 32, "heads": 2, "dim": 8, "repeats": 1}
BAD_CASES = {
    "n_0": ({**CASE, "n": 0}, ["n must be", ">= 1"]),
    "heads_0": ({**CASE, "heads": 0}, ["heads"]),
    "repeats_0": ({**CASE, "repeats": 0}, ["repeats"]),
    "dim_1": ({**CASE, "dim": 1}, ["dim"]),
    "unknown_method": ({**CASE, "method": "windw"}, ["unknown method 'windw'", "did you mean"]),
    "bad_method_param": ({**CASE, "params": {"w": -2}}, ["w must be"]),
    "unknown_param": ({**CASE, "params": {"width": 2}}, ["no parameter 'width'"]),
    "unknown_path": ({**CASE, "path": "sparse"}, ["unknown path 'sparse'"]),
    "flex_entmax": ({**CASE, "path": "flex"}, ["flex", "softmax"]),
    "unknown_normalizer": ({**CASE, "normalizer": "max"}, ["normalizer"]),
    "alpha_1": ({**CASE, "alpha": 1}, ["alpha"]),
    "unknown_field": ({**CASE, "repeat": 3}, ["unknown field 'repeat'", "'repeats'"]),
    "dense_with_params": ({**CASE, "method": "sdpa", "params": {"w": 1}}, ["no parameters"]),
    "unknown_device": ({**CASE, "device": "tpu"}, ["device"]),
    "gold_unknown_impl": ({"suite": "gold", "impl": "gld", "n": 8}, ["implementation 'gld'"]),
    "gold_n_0": (
        {"suite": "gold", "impl": "gold", "n": 0, "heads": 1, "dim": 4, "repeats": 1},
        ["n must be"],
    ),
}
if not torch.cuda.is_available():
    BAD_CASES["cuda_without_cuda"] = ({**CASE, "device": "cuda"}, ["CUDA is not available"])
    BAD_CASES["xformers_on_cpu"] = ({**CASE, "method": "xformers"}, ["CUDA only"])


@pytest.mark.parametrize("case, words", list(BAD_CASES.values()), ids=list(BAD_CASES))
def test_bad_speed_case_is_rejected_before_measuring(case, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raises_one_line(ValueError, lambda: validate_case(case), *words)
    # measure_case refuses it too, before any process starts or anything is written.
    raises_one_line(ValueError, lambda: measure_case(case), *words)
    assert list(tmp_path.iterdir()) == []


def test_good_speed_cases_pass():
    assert validate_case(CASE) == CASE
    assert validate_case({"method": "sdpa", "n": 8})["method"] == "sdpa"
