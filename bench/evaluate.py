"""Score one method configuration on a dataset: fit on train, predict and measure on eval."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from sparsebench.datasets import QKData
from sparsebench.methods import Method, gold_graph

from .metrics import average_layers, graph_metrics, macro_average

__all__ = ["evaluate", "evaluate_layer"]


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
    """
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
    dataset split to reuse gold graphs.

    Returns:
        ``{"metrics": {...averaged over layers}, "layers": {layer: {...}}, "fit_s": float,
        "predict_s": float}``.
    """
    layers = list(range(data.num_layers)) if layers is None else list(layers)
    for i in layers:
        data.layer(i)  # range check with a clear error
    target = data.split(split) if split in data.split_names else data
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
