"""Score one method configuration on a dataset: fit on train, predict and measure on eval."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from sparsebench.datasets import QKData
from sparsebench.methods import Method, gold_graph

from .metrics import average_layers, graph_metrics, macro_average

__all__ = ["check_layers", "check_split", "evaluate", "evaluate_layer"]


def _positive(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = " or None" if optional else ""
        raise ValueError(f"{name} must be a positive integer{extra}, got {value!r}")


def check_layers(data: QKData, layers: Sequence[int] | None) -> list[int]:
    """``layers`` (``None``: all) checked against the data: ints in ``0 .. layers - 1``, once each.

    Raises:
        ValueError: naming the bad layer and the layers the dataset has (negative indices are
            not accepted).
    """
    n = data.num_layers
    if layers is None:
        return list(range(n))
    if isinstance(layers, int | str):
        raise ValueError(f"layers must be a list of layer indices, got {layers!r}")
    seen: list[int] = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layer {layer!r} is not an integer; give layers as 0, 1, ...")
        if not 0 <= layer < n:
            raise ValueError(
                f"layer {layer} is out of range: the dataset has layers 0 to {n - 1} "
                "(negative indices are not accepted)"
            )
        if layer in seen:
            raise ValueError(f"layer {layer} is given twice; give each layer once")
        seen.append(layer)
    if not seen:
        raise ValueError("no layers given; give at least one layer, or none for all")
    return seen


def check_split(data: QKData, split: str) -> str:
    """``split`` if the data has it.

    Raises:
        ValueError: naming the splits the dataset has (a missing split never means "score
            every sequence", which would score a learned method on its training sequences).
    """
    if split not in data.split_names:
        name = data.meta.get("name", "the dataset")
        raise ValueError(
            f"{name} has no split {split!r}; its splits are {', '.join(data.split_names)}"
        )
    return split


def _check_evaluate(data, method, layers, split, fit, batch_size, block_size) -> list[int]:
    """The arguments of :func:`evaluate` checked; returns the layers."""
    if not isinstance(data, QKData):
        raise ValueError(f"data must be a QKData, got {type(data).__name__}")
    if not isinstance(method, Method):
        raise ValueError(f"method must be a Method instance, got {type(method).__name__}")
    layers = check_layers(data, layers)
    _positive("batch_size", batch_size)
    _positive("block_size", block_size, optional=True)
    if split is not None:
        check_split(data, split)
    if fit and method.learns and "train" not in data.split_names:
        raise ValueError(
            f"{method.id} learns from the 'train' split, which this dataset lacks (splits: "
            f"{', '.join(data.split_names)}); pass fit=False with a fitted method"
        )
    return layers


def evaluate_layer(
    method: Method,
    data: QKData,
    layer: int,
    *,
    batch_size: int = 16,
    block_size: int | None = None,
    gold_cache: dict | None = None,
    predict_cache: dict | None = None,
) -> dict:
    """Graph metrics of ``method`` (already fitted) on one layer of ``data``.

    Sequences are scored in batches trimmed to their longest member; per-sequence figures are
    pooled over all batches before the paper's averaging (over sequences, then heads). Gold
    graphs are kept in ``gold_cache`` (keyed by layer and batch) when one is given, so a sweep
    computes each only once. ``predict_cache`` (one dict per fitted state) lets configurations
    that differ only in window and global tokens share base predictions (``Method.predict``).
    ``method`` is used as given: bind it to the data first (``Method.for_data``; the ``gold``
    row takes the data's α), as :func:`evaluate` and sweeps do.

    Raises:
        ValueError: for a layer out of range or a batch or block size that is not positive.
    """
    check_layers(data, [layer])
    _positive("batch_size", batch_size)
    _positive("block_size", block_size, optional=True)
    pooled: dict[str, list[torch.Tensor]] = {}
    predict_s = 0.0
    for bi, batch in enumerate(data.batches(layer, batch_size)):
        key = (layer, batch_size, bi)
        gold = None if gold_cache is None else gold_cache.get(key)
        if gold is None:
            gold = gold_graph(
                batch.q,
                batch.k,
                alpha=data.alpha,
                lengths=batch.lengths,
                causal=data.causal,
                with_probs=True,
            )
            if gold_cache is not None:
                gold_cache[key] = gold
        t0 = time.perf_counter()
        cache = None if predict_cache is None else predict_cache.setdefault(key, {})
        pred = method.predict(
            batch.q, batch.k, lengths=batch.lengths, causal=data.causal, cache=cache
        )
        predict_s += time.perf_counter() - t0
        if cache is not None:  # a reused base prediction still counts its own time
            predict_s += cache.get("reused_s", 0.0)
        m = graph_metrics(pred, gold, probs=gold, block_size=block_size)
        for name, v in m["per_sequence"].items():
            pooled.setdefault(name, []).append(v)
    out: dict = {}
    per_head = {}
    for name, vs in pooled.items():
        out[name], per_head[name] = macro_average(torch.cat(vs))
    out["per_head"] = per_head
    out["predict_s"] = predict_s
    return out


def evaluate(
    data: QKData,
    method: Method,
    *,
    layers: Sequence[int] | None = None,
    split: str = "eval",
    fit: bool = True,
    batch_size: int = 16,
    block_size: int | None = None,
    gold_cache: dict | None = None,
) -> dict:
    """Fit ``method`` on the train split (when it learns) and score it on ``split``.

    The method is bound to the data first (``Method.for_data``; the ``gold`` row takes the
    data's α), then fitted per layer. Pass the same ``gold_cache`` dict to evaluations of one
    dataset split to reuse gold graphs. Every argument is checked before any work is done.

    Args:
        data: the dataset.
        method: the configuration to score.
        layers: layer indices in ``0 .. num_layers - 1``; ``None`` = every layer.
        split: the split scored; it must exist (``None`` scores every sequence, train
            included: only for methods that do not learn, or on purpose).
        fit: fit learned methods on the ``train`` split first.
        batch_size: sequences per batch (positive).
        block_size: kernel block size of the block-sparsity figures, or ``None``.
        gold_cache: a dict reused across evaluations of the same data and split.

    Returns:
        ``{"metrics": {...averaged over layers}, "layers": {layer: {...}}, "fit_s": float,
        "predict_s": float}``.

    Raises:
        ValueError: for a layer out of range, a missing split (naming the splits that exist),
            a batch or block size that is not positive, or a learned method on data without a
            ``train`` split.
    """
    layers = _check_evaluate(data, method, layers, split, fit, batch_size, block_size)
    target = data if split is None else data.split(split)
    method = method.for_data(data)
    per_layer: dict[int, dict] = {}
    fit_s = predict_s = 0.0
    for i in layers:
        m = method
        if fit and method.learns:
            train = data.split("train")
            t0 = time.perf_counter()
            m = method.clone().fit(train, i)
            fit_s += time.perf_counter() - t0
        per_layer[i] = evaluate_layer(
            m, target, i, batch_size=batch_size, block_size=block_size, gold_cache=gold_cache
        )
        predict_s += per_layer[i].pop("predict_s")
    return {
        "metrics": average_layers(per_layer.values()),
        "layers": per_layer,
        "fit_s": fit_s,
        "predict_s": predict_s,
    }
