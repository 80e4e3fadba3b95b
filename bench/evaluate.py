"""Score one method configuration on a dataset: fit on train, predict and measure on eval.

Besides the paper's averages, each layer's result keeps the figures per sequence, the
sequence lengths and the figures by length bin (:mod:`.breakdown`), from which a report
computes bootstrap intervals, and the attention ``output_error`` (:mod:`.attention_error`).
Everything can run on a GPU (``device="cuda"``): queries, keys and values are moved there once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import torch

from sparsebench.datasets import QKData
from sparsebench.methods import Method, gold_graph, to_scoring

from .attention_error import output_error, reference_output, top_logits
from .breakdown import by_length, per_sequence
from .metrics import average_layers, graph_metrics, macro_average

__all__ = [
    "check_layers",
    "gold_and_reference",
    "layer_result",
    "check_split",
    "device_label",
    "evaluate",
    "evaluate_layer",
    "on_device",
    "resolve_device",
]


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device: ``cpu``, or ``cuda`` (``cuda:N``) where CUDA is available.

    Raises:
        ValueError: for another kind of device, or CUDA on a machine without it (naming the fix).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: CUDA is not available on this machine; use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
    return dev


def device_label(device: str | torch.device) -> str:
    """The ``device`` field of a record: ``cpu`` or ``cuda (<GPU name>)``."""
    dev = resolve_device(device)
    if dev.type == "cpu":
        return "cpu"
    return f"cuda ({torch.cuda.get_device_name(dev)})"


def on_device(data: QKData, device: str | torch.device) -> QKData:
    """``data`` with its queries, keys and values on ``device`` (lengths stay on the CPU).

    The data itself when it is there already.

    Raises:
        ValueError: for a device that is not available (:func:`resolve_device`).
    """
    dev = resolve_device(device)
    if data.q.device == dev or (dev.type == data.q.device.type and dev.index is None):
        return data
    move = lambda t: None if t is None else t.to(dev)  # noqa: E731
    return dataclasses.replace(data, q=move(data.q), k=move(data.k), v=move(data.v))


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
    device: str | torch.device = "cpu",
    longest: int | None = None,
) -> dict:
    """Graph metrics and output error of ``method`` (already fitted) on one layer of ``data``.

    Sequences are scored in batches of similar length (shortest first), each trimmed to its
    longest member; per-sequence figures are returned in data order and
    pooled over all batches before the paper's averaging (over sequences, then heads). Gold
    graphs and the full-attention reference outputs are kept in ``gold_cache`` (keyed by layer
    and batch) when one is given, so a sweep computes each only once. ``predict_cache`` (one
    dict per fitted state) lets configurations that differ only in window and global tokens
    share base predictions (``Method.predict``). ``method`` is used as given: bind it to the
    data first (``Method.for_data``; the ``gold`` row takes the data's α), as :func:`evaluate`
    and sweeps do. Data without values (``v``) has no output error (NaN).

    Args:
        method: the fitted configuration.
        data: the sequences scored (one split).
        layer: the layer.
        batch_size: sequences per batch.
        block_size: kernel block size of the block-sparsity figures, or ``None``.
        gold_cache: a dict reused across evaluations of the same data.
        predict_cache: a dict shared by configurations of one fitted state.
        device: where to predict and score (queries, keys and values are moved there).
        longest: the dataset's longest sequence, up to which the length bins reach (default:
            the longest in ``data``).

    Returns:
        ``{metric: value, "output_error": value, "per_head": {...}, "per_sequence": {...},
        "sequence_lengths": [...], "by_length": {...}, "predict_s": seconds}``.

    Raises:
        ValueError: for a layer out of range, a batch or block size that is not positive, or a
            device that is not available.
    """
    check_layers(data, [layer])
    _positive("batch_size", batch_size)
    _positive("block_size", block_size, optional=True)
    dev = resolve_device(device)
    pooled: dict[str, list[torch.Tensor]] = {}
    errors: list[torch.Tensor] = []
    predict_s = 0.0
    # Sequences go in order of length, so that batches pad little; figures return to data order.
    order = data.by_length()
    for bi, batch in enumerate(data.batches(layer, batch_size, order=order)):
        q, k = batch.q.to(dev), batch.k.to(dev)
        v = None if batch.v is None else batch.v.to(dev)
        key = (layer, batch_size, bi)
        gold, reference, ranked = gold_and_reference(gold_cache, key, batch, q, k, v, data.alpha)
        t0 = time.perf_counter()
        cache = None if predict_cache is None else predict_cache.setdefault(key, {})
        pred = method.predict(q, k, lengths=batch.lengths, causal=data.causal, cache=cache)
        predict_s += time.perf_counter() - t0
        if cache is not None:  # a reused base prediction still counts its own time
            predict_s += cache.get("reused_s", 0.0)
        if len(list(pred.row_chunks())) == 1:
            # Metrics and output error read the same rows: lay the edges out once.
            pred = pred.materialize()
        m = graph_metrics(pred, gold, probs=gold, block_size=block_size)
        for name, val in m["per_sequence"].items():
            pooled.setdefault(name, []).append(val)
        if v is None:
            errors.append(torch.full(q.shape[:2], float("nan"), dtype=torch.float64))
        else:
            err = output_error(
                q,
                k,
                v,
                pred,
                data.alpha,
                lengths=batch.lengths,
                causal=data.causal,
                reference=reference,
                gold=gold,
                ranked=ranked,
            )
            errors.append(err["per_sequence"]["output_error"])
    return layer_result(pooled, errors, order, data, longest, predict_s)


def layer_result(pooled, errors, order, data: QKData, longest, predict_s: float) -> dict:
    """What :func:`evaluate_layer` returns, from the per-batch figures of sequences in ``order``.

    ``pooled`` maps each metric to its ``(b, H)`` per-batch tensors and ``errors`` holds the
    output error's; both follow ``order`` and are returned to data order.
    """
    out: dict = {}
    per_head = {}
    back = torch.argsort(order)
    per_bh = {name: torch.cat(vs)[back] for name, vs in pooled.items()}
    for name, values in per_bh.items():
        out[name], per_head[name] = macro_average(values)
    per_bh["output_error"] = torch.cat(errors)[back]
    out["output_error"] = macro_average(per_bh["output_error"])[0]
    out["per_head"] = per_head
    out["per_sequence"] = per_sequence(per_bh)
    out["sequence_lengths"] = [int(x) for x in data.lengths.tolist()]
    longest = int(data.lengths.max()) if longest is None else longest
    out["by_length"] = by_length(per_bh, data.lengths, longest)
    out["predict_s"] = predict_s
    return out


def gold_and_reference(cache: dict | None, key: tuple, batch, q, k, v, alpha: float):
    """The gold graph, full-attention output and ranked logits of one batch.

    The output and the ranked logits (:func:`~.attention_error.top_logits`, for α = 1.5) are
    ``None`` without values. Taken from ``cache`` when there, else computed (and stored when a
    cache is given).
    """

    def cached(name, make):
        got = None if cache is None else cache.get((name, *key))
        if got is None:
            got = make()
            if cache is not None:
                cache[(name, *key)] = got
        return got

    lengths, causal = batch.lengths, batch.causal
    gold = cached(
        "gold",
        lambda: gold_graph(q, k, alpha=alpha, lengths=lengths, causal=causal, with_probs=True),
    )
    if v is None:
        return gold, None, None
    reference = cached(
        "reference", lambda: reference_output(q, k, v, alpha, lengths=lengths, causal=causal)
    )
    ranked = None
    if alpha == 1.5:
        ranked = cached(
            "ranked",
            lambda: top_logits(to_scoring(q), to_scoring(k), lengths=lengths, causal=causal),
        )
    return gold, reference, ranked


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
    device: str | torch.device = "cpu",
) -> dict:
    """Fit ``method`` on the train split (when it learns) and score it on ``split``.

    Its length is the checks made before any work and the per-layer loop that shares the gold cache;
    splitting would pass that state around.

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
        device: ``"cpu"`` or ``"cuda"``: where the method is fitted and scored (the data's
            queries, keys and values are moved there once).

    Returns:
        ``{"metrics": {...averaged over layers}, "layers": {layer: {...}}, "fit_s": float,
        "predict_s": float}``; each layer's entry also holds its ``output_error``,
        ``per_sequence``, ``sequence_lengths`` and ``by_length`` (:func:`evaluate_layer`).

    Raises:
        ValueError: for a layer out of range, a missing split (naming the splits that exist),
            a batch or block size that is not positive, a learned method on data without a
            ``train`` split, or a device that is not available.
    """
    layers = _check_evaluate(data, method, layers, split, fit, batch_size, block_size)
    resolve_device(device)
    longest = int(data.lengths.max())
    method = method.for_data(data)
    data = on_device(data, device)
    target = data if split is None else data.split(split)
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
            m,
            target,
            i,
            batch_size=batch_size,
            block_size=block_size,
            gold_cache=gold_cache,
            device=device,
            longest=longest,
        )
        predict_s += per_layer[i].pop("predict_s")
    return {
        "metrics": average_layers(per_layer.values()),
        "layers": per_layer,
        "fit_s": fit_s,
        "predict_s": predict_s,
    }
