"""The contract every registered method meets: the registry is the test matrix.

Checks run on each method's default configuration. A method that cannot meet a check declares
it in ``tags.expected_failures`` (check name -> reason) and the check becomes an xfail.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import cache

import pytest
import torch

from sparsebench import datasets, methods
from sparsebench.bench import Graph, gold_graph, graph_metrics

NAMES = methods.names()


@cache
def data(causal: bool):
    # n = 37: not a multiple of any block size; lengths vary below it.
    return datasets.synthetic(num_seqs=10, layers=1, heads=2, n=37, d=8, causal=causal, seed=5)


@cache
def fitted(name: str, causal: bool):
    m = methods.create(name)
    if m.learns:
        m.fit(data(causal).split("train"), 0)
    return m


def check(name: str, what: str):
    reason = methods.get(name).tags.expected_failures.get(what)
    if reason:
        pytest.xfail(reason)


def eval_batch(causal: bool):
    ev = data(causal).split("eval")
    layer = ev.layer(0)
    return layer.q, layer.k, layer.lengths


@pytest.mark.parametrize("name", NAMES)
def test_params_are_dataclass_fields(name):
    cls = methods.get(name)
    assert dataclasses.is_dataclass(cls)
    m = methods.create(name)
    assert set(m.get_params()) == {f.name for f in dataclasses.fields(cls)}
    assert m.clone().get_params() == m.get_params()
    assert m.id.startswith(name)
    assert cls.__doc__ and cls.__doc__.strip(), "class docstring names the paper"
    assert "quick" in cls.grid, "a quick grid is declared"
    for setting, grid in cls.grid.items():
        for p in grid:
            assert p in m.get_params(), f"grid {setting} sweeps unknown parameter {p}"


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("name", NAMES)
def test_predict_shape_padding_causal(name, causal):
    check(name, "predict")
    if causal and not methods.get(name).tags.supports_causal:
        q, k, lengths = eval_batch(causal)
        with pytest.raises(NotImplementedError):
            methods.create(name).predict(q, k, lengths=lengths, causal=True)
        return
    m = fitted(name, causal)
    q, k, lengths = eval_batch(causal)
    g = m.predict(q, k, lengths=lengths, causal=causal)
    assert isinstance(g, Graph)
    B, H, N, _ = q.shape
    assert g.shape == (B, H, N, N)
    dense = g.to_dense()
    assert dense.dtype == torch.bool and dense.shape == (B, H, N, N)
    assert torch.equal(g.num_edges(), dense.sum((-1, -2)))
    pos = torch.arange(N)
    for b, L in enumerate(lengths.tolist()):
        assert not dense[b, :, L:].any() and not dense[b, :, :, L:].any(), "padding attended"
    if causal:
        assert not (dense & (pos.view(1, 1, 1, -1) > pos.view(1, 1, -1, 1))).any()


@pytest.mark.parametrize("name", NAMES)
def test_padding_values_do_not_matter(name):
    """Garbage in the padded positions must not change the predicted graph."""
    check(name, "padding_invariant")
    m = fitted(name, False)
    q, k, lengths = eval_batch(False)
    pad = torch.arange(q.shape[2]).view(1, 1, -1, 1) >= lengths.view(-1, 1, 1, 1)
    noise = torch.randn(q.shape, generator=torch.Generator().manual_seed(0)) * 5
    a = m.predict(q, k, lengths=lengths).to_dense()
    b = m.predict(q + noise * pad, k + noise * pad, lengths=lengths).to_dense()
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name):
    check(name, "deterministic")
    q, k, lengths = eval_batch(False)
    a = fitted(name, False).predict(q, k, lengths=lengths).to_dense()
    fresh = methods.create(name)
    if fresh.learns:
        fresh.fit(data(False).split("train"), 0)
    b = fresh.predict(q, k, lengths=lengths).to_dense()
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_seed_matters_only_to_stochastic_methods(name):
    """A method not tagged ``stochastic`` predicts the same graph for every seed."""
    if methods.get(name).tags.stochastic:
        pytest.skip("stochastic: the seed may change the graph")
    q, k, lengths = eval_batch(False)
    a = fitted(name, False).predict(q, k, lengths=lengths).to_dense()
    other = methods.create(name, seed=7)
    if other.learns:
        other.fit(data(False).split("train"), 0)
    assert torch.equal(a, other.predict(q, k, lengths=lengths).to_dense())


@pytest.mark.parametrize("name", NAMES)
def test_for_data_binds_without_changing_the_method(name):
    m = methods.create(name)
    bound = m.for_data(data(False))
    assert type(bound) is type(m) and m.get_params() == methods.create(name).get_params()
    assert bound.id.startswith(name)


@pytest.mark.parametrize("alpha", [1.3, 2.0])
def test_gold_row_takes_the_data_alpha(alpha):
    d = datasets.synthetic(num_seqs=4, layers=1, heads=2, n=23, d=8, seed=2, alpha=alpha)
    lay = d.layer(0)
    gold = methods.create("gold")
    assert gold.id == "gold" and gold.alpha is None
    bound = gold.for_data(d)
    assert bound.alpha == alpha and gold.alpha is None
    got = bound.predict(lay.q, lay.k, lengths=lay.lengths).to_dense()
    want = gold_graph(lay.q, lay.k, alpha=alpha, lengths=lay.lengths).to_dense()
    assert torch.equal(got, want)
    # An unbound row predicts with α = 1.5; an α set by hand is kept.
    plain = gold.predict(lay.q, lay.k, lengths=lay.lengths).to_dense()
    assert torch.equal(plain, gold_graph(lay.q, lay.k, alpha=1.5, lengths=lay.lengths).to_dense())
    assert not torch.equal(plain, got)
    assert methods.create("gold", alpha=1.7).for_data(d).alpha == 1.7


@pytest.mark.parametrize("name", NAMES)
def test_single_token_and_odd_lengths(name):
    check(name, "tiny")
    m = fitted(name, False)
    g = torch.Generator().manual_seed(1)
    q1, k1 = torch.randn(1, 2, 1, 8, generator=g), torch.randn(1, 2, 1, 8, generator=g)
    assert m.predict(q1, k1).to_dense().shape == (1, 2, 1, 1)
    q, k = torch.randn(2, 2, 37, 8, generator=g), torch.randn(2, 2, 37, 8, generator=g)
    out = m.predict(q, k, lengths=torch.tensor([37, 19])).to_dense()
    assert not out[1, :, 19:].any()


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_is_rejected(name):
    m = fitted(name, False)
    with pytest.raises(ValueError, match="empty batch"):
        m.predict(torch.zeros(0, 2, 4, 8), torch.zeros(0, 2, 4, 8))


@pytest.mark.parametrize("name", NAMES)
def test_unfitted_learned_method_says_so(name):
    if not methods.get(name).tags.requires_fit:
        pytest.skip("needs no fit")
    q, k, _ = eval_batch(False)
    with pytest.raises(RuntimeError, match="fitted"):
        methods.create(name).predict(q, k)


@pytest.mark.parametrize("causal", [False, True])
def test_reference_rows(causal):
    q, k, lengths = eval_batch(causal)
    gold = gold_graph(q, k, lengths=lengths, causal=causal)
    for name, want in (
        ("gold", {"recall": 1.0, "exact": 1.0, "precision": 1.0}),
        ("full", {"recall": 1.0, "exact": 1.0, "sparsity": 0.0}),
    ):
        m = graph_metrics(methods.create(name).predict(q, k, lengths=lengths, causal=causal), gold)
        for key, v in want.items():
            assert m[key] == pytest.approx(v), (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_predict_cache_shares_base_across_window_and_globals(name):
    # A sweep reuses one base prediction across window/global variants; it must change nothing.
    check(name, "predict")
    base = fitted(name, False)
    q, k, lengths = eval_batch(False)
    params = base.get_params()
    variants = [{}]
    if "window" in params and "global_tokens" in params:
        variants += [{"window": 5}, {"window": 3, "global_tokens": 2}]
    cache: dict = {}
    for i, change in enumerate(variants):
        m = copy.copy(base)  # keeps learned state, unlike clone()
        for p, v in change.items():
            setattr(m, p, v)
        cached = m.predict(q, k, lengths=lengths, cache=cache).to_dense()
        fresh = m.predict(q, k, lengths=lengths).to_dense()
        assert torch.equal(cached, fresh), change
        reused = cache.get("reused_s", 0.0)
        assert (reused > 0) == (i > 0 and m._base_key() is not None), (change, reused)


@pytest.mark.parametrize("name", NAMES)
def test_declared_bounds_and_float_parameters_are_enforced(name):
    """Below a declared minimum, NaN in a float, or a wrong type: refused on construction."""
    cls = methods.get(name)
    for f in dataclasses.fields(cls):
        bad = []
        if "min" in f.metadata:
            bad.append(f.metadata["min"] - 1)
        if "above" in f.metadata:
            bad.append(f.metadata["above"])
        if "max" in f.metadata:
            bad.append(f.metadata["max"] + 1)
        if isinstance(f.default, float):
            bad += [float("nan"), float("inf")]
        if isinstance(f.default, bool | int):
            bad.append("1")
        for value in bad:
            with pytest.raises(ValueError, match=f"{f.name} must be") as info:
                methods.create(name, **{f.name: value})
            assert "\n" not in str(info.value)
