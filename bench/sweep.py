"""Resumable sweeps: every configuration of every method, per layer, one record each.

For each layer the gold graphs of the evaluation split are computed once and shared by every
configuration. Each method is fitted once per layer and fit-time configuration; its
predict-time parameters (``predict_time`` fields, e.g. thresholds, windows) are then swept on
the fitted instance. Every finished (dataset, configuration, layer) is appended to a JSON-lines
file at once, so a sweep killed at any point loses at most the configuration in progress, and
a new run skips what is done.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sparsebench.datasets import QKData
from sparsebench.methods import Method, create, get, names

from .evaluate import evaluate_layer
from .records import append_record, provenance, read_records, repair_tail

__all__ = ["expand_grid", "record_key", "sweep"]

#: Block size at which sweeps report block sparsity.
BLOCK_SIZE = 64


def expand_grid(name: str, setting: str, causal: bool) -> list[dict[str, Any]]:
    """Parameter dicts of a method's grid.

    ``paper`` on bidirectional data uses ``paper_mlm`` when the method declares it (the paper's
    encoder sweep).
    """
    cls = get(name)
    key = setting
    if setting == "paper" and not causal and "paper_mlm" in cls.grid:
        key = "paper_mlm"
    grid = cls.grid.get(key)
    if grid is None:
        raise ValueError(f"method {name!r} has no grid {key!r}; it has {sorted(cls.grid)}")
    keys = list(grid)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*grid.values())] or [
        {}
    ]


def record_key(dataset: str, method_id: str, layer: int, split: str) -> str:
    """Identity of a record: what a resumed sweep looks up."""
    return f"{dataset}|{method_id}|layer={layer}|{split}"


def _fit_key(m: Method) -> tuple:
    return tuple((p, repr(getattr(m, p))) for p in m.fit_params())


def run_unit(
    target: QKData,
    train: QKData | None,
    dataset: str,
    layer: int,
    configs: list[Method],
    *,
    split: str,
    grid: str,
    batch_size: int,
    prov: dict[str, Any],
    gold_cache: dict | None = None,
) -> Iterator[tuple[str, Any]]:
    """Fit and evaluate configurations of one method on one layer.

    Configurations sharing fit-time parameters share one fit. Yields ``("record", record)`` as
    each configuration finishes and ``("failure", message)`` for one that breaks (it never
    stops the others).
    """
    gold_cache = {} if gold_cache is None else gold_cache
    groups: dict[tuple, list[Method]] = {}
    for m in configs:
        groups.setdefault(_fit_key(m), []).append(m)
    for group in groups.values():
        fitted, fit_s = group[0], 0.0
        needs_fit = fitted.learns
        try:
            if needs_fit:
                if train is None:
                    raise ValueError(f"{fitted.name} learns, but {dataset} has no train split")
                t0 = time.perf_counter()
                fitted = fitted.clone().fit(train, layer)
                fit_s = time.perf_counter() - t0
        except Exception as e:  # one broken configuration must not end a sweep
            for m in group:
                yield "failure", f"{m.id} layer {layer}: fit failed ({type(e).__name__}: {e})"
            continue
        predict_cache: dict = {}  # base predictions shared across window/global variants
        for m in group:
            if not needs_fit:
                inst = m  # nothing learned: every configuration is its own instance
            else:
                inst = fitted if m is group[0] else _with_predict_params(fitted, m)
            try:
                res = evaluate_layer(
                    inst,
                    target,
                    layer,
                    batch_size=batch_size,
                    block_size=BLOCK_SIZE,
                    gold_cache=gold_cache,
                    predict_cache=predict_cache,
                )
            except Exception as e:
                yield "failure", f"{m.id} layer {layer}: failed ({type(e).__name__}: {e})"
                continue
            per_head = res.pop("per_head")
            yield (
                "record",
                {
                    "key": record_key(dataset, m.id, layer, split),
                    "dataset": dataset,
                    "method": m.name,
                    "method_id": m.id,
                    "params": m.get_params(),
                    "layer": layer,
                    "split": split,
                    "grid": grid,
                    "causal": target.causal,
                    "num_sequences": len(target),
                    "block_size": BLOCK_SIZE,
                    **res,
                    "fit_s": fit_s,
                    "per_head": per_head,
                    "seed": m.seed,
                    **prov,
                },
            )


def _ray_unit(target, train, dataset, layer, configs, kw):
    return list(run_unit(target, train, dataset, layer, configs, **kw))


def sweep(
    data: QKData,
    out: str | os.PathLike,
    *,
    dataset: str | None = None,
    methods: str = "*",
    grid: str = "quick",
    layers: list[int] | None = None,
    split: str = "eval",
    batch_size: int = 16,
    executor: str = "local",
    address: str | None = None,
    gpus_per_task: float = 0,
    num_cpus: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Run a grid sweep, appending one record per (configuration, layer) to ``out``.

    Args:
        data: the dataset (train split for fitting, ``split`` for scoring).
        out: JSON-lines record file; existing records are skipped.
        dataset: name in the records (default: the card's name).
        methods: glob over method names.
        grid: grid setting (``quick``, ``paper``).
        layers: layers to run (default: all).
        split: split to score.
        batch_size: sequences per scoring batch.
        executor: ``local`` (in this process) or ``ray`` (one Ray task per layer and method;
            the driver alone writes ``out``, as each task finishes).
        address: Ray cluster address (``None``: start a local instance).
        gpus_per_task: GPUs each Ray task requests (so one timing task owns one GPU).
        num_cpus: CPUs of a local Ray instance (default: all).
        progress: show a progress bar.
        log: where messages go.

    Returns:
        ``{"done": records written now, "skipped": already present, "failed": errors}``.
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    dataset = dataset or data.meta.get("name", "dataset")
    out = Path(out)
    repair_tail(out)
    done = {r.get("key") for r in read_records(out)}
    layers = list(range(data.num_layers)) if layers is None else layers
    for i in layers:
        data.layer(i)
    target = data.split(split) if split in data.split_names else data
    train = data.split("train") if "train" in data.split_names else None

    plan: list[tuple[str, list[Method]]] = []
    for name in names(methods):
        cls = get(name)
        if data.causal and not cls.tags.supports_causal:
            continue
        plan.append((name, [create(name, **p) for p in expand_grid(name, grid, data.causal)]))
    units = []
    for layer in layers:
        for _, configs in plan:
            todo = [m for m in configs if record_key(dataset, m.id, layer, split) not in done]
            if todo:
                units.append((layer, todo))
    total = sum(len(c) for _, c in units)
    skipped = sum(len(c) for _, c in plan) * len(layers) - total
    log(f"sweep {dataset}: {total} to run, {skipped} already in {out} ({executor})")
    prov = provenance()
    kw = {"split": split, "grid": grid, "batch_size": batch_size, "prov": prov}
    bar = tqdm(total=total, disable=not progress, unit="config", desc=dataset)
    written = failed = 0

    def take(events):
        nonlocal written, failed
        for kind, item in events:
            if kind == "record" and item["key"] not in done:
                append_record(out, item)
                done.add(item["key"])
                written += 1
            elif kind == "failure":
                log(f"  {item}")
                failed += 1
            bar.update(1)

    if executor == "local":
        caches: dict[int, dict] = {}
        for layer, configs in units:
            # Gold graphs of a layer are computed once and shared by all its units.
            cache = caches.setdefault(layer, {})
            for old in [x for x in caches if x != layer]:
                del caches[old]
            take(run_unit(target, train, dataset, layer, configs, gold_cache=cache, **kw))
    else:
        import ray

        if not ray.is_initialized():
            ray.init(
                address=address,
                num_cpus=num_cpus if address is None else None,
                include_dashboard=False,
                log_to_driver=False,
            )
        task = ray.remote(
            max_retries=3, retry_exceptions=False, num_cpus=1, num_gpus=gpus_per_task
        )(_ray_unit)
        tref, trainref = ray.put(target), ray.put(train)
        pending = [
            task.remote(tref, trainref, dataset, layer, configs, kw) for layer, configs in units
        ]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            take(ray.get(ready[0]))
    bar.close()
    return {"done": written, "skipped": skipped, "failed": failed}


def _with_predict_params(fitted: Method, m: Method) -> Method:
    """The fitted instance with ``m``'s predict-time parameters (learned state kept)."""
    import copy

    inst = copy.copy(fitted)
    fit = set(fitted.fit_params())
    for p, v in m.get_params().items():
        if p not in fit:
            setattr(inst, p, v)
    return inst
