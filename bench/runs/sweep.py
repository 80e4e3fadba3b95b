"""Resumable sweeps: every configuration of every method, per layer, one record each.

For each layer the gold graphs of the evaluation split are computed once and shared by every
configuration. Each method is fitted once per layer and fit-time configuration; its
predict-time parameters (``predict_time`` fields, e.g. thresholds, windows) are then swept on
the fitted instance. Every finished (dataset, configuration, layer) is appended to a JSON-lines
file at once, so a sweep killed at any point loses at most the configuration in progress, and
a new run skips what is done. Records are keyed with the dataset's content hash and the
sparsebench version (:func:`~.runner.record_key`), and one sweep at a time writes a records
file (:func:`~.records.records_writer`). Arguments are checked against the data before any
work (:func:`sweep_plan`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sparsebench.datasets import QKData, check_name
from sparsebench.methods import Method

from ..evaluate import (
    check_layers,
    check_split,
    device_label,
    evaluate_layer,
    on_device,
    resolve_device,
)
from ..window_family import evaluate_family, family_key
from .records import provenance, records_writer
from .runner import (
    FitStore,
    configurations,
    fit_once,
    record_key,
    select_methods,
    with_predict_params,
)

__all__ = ["BLOCK_SIZE", "run_unit", "sweep", "sweep_plan"]

#: Block size at which sweeps report block sparsity.
BLOCK_SIZE = 64


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
    data_hash: str,
    gold_cache: dict | None = None,
    device: str = "cpu",
    longest: int | None = None,
    fits: FitStore | None = None,
) -> Iterator[tuple[str, Any]]:
    """Fit and evaluate configurations of one method on one layer.

    Configurations sharing fit-time parameters share one fit. Yields ``("record", record)`` as
    each configuration finishes and ``("failure", message)`` for one that breaks (it never
    stops the others). ``data_hash`` is the content hash of the whole dataset, which keys the
    records. ``device`` is where methods are fitted and scored (the data is moved there unless
    it is there already); ``longest`` the dataset's longest sequence, up to which the records'
    length bins reach. With ``fits`` (a :class:`~.runner.FitStore` of the data ``train``
    comes from) the fits are taken from it and kept there for later runs.
    """
    gold_cache = {} if gold_cache is None else gold_cache
    target = on_device(target, device)
    train = None if train is None else on_device(train, device)

    def fit(m: Method) -> Method:
        if fits is not None:
            return fits.fitted(m, layer)
        if train is None:
            raise ValueError(f"{m.name} learns, but {dataset} has no train split")
        return m.clone().fit(train, layer)

    kw = {
        "batch_size": batch_size,
        "block_size": BLOCK_SIZE,
        "gold_cache": gold_cache,
        "device": device,
        "longest": longest,
    }
    for group in fit_once(configs, target, fit, with_predict_params):
        predict_cache: dict = {}  # base predictions shared across window/global variants
        for m, _, _, _, error in group:
            if error is not None:
                why = f"{type(error).__name__}: {error}"
                yield "failure", f"{m.id} layer {layer}: fit failed ({why})"
        ready = [x for x in group if x.error is None]
        # Nothing learned: every configuration is its own instance.
        inst = lambda x: x.method if x.state is None else x.state  # noqa: E731
        # Configurations that differ only in their window (contiguous in a grid) are scored
        # together from one laid-out base prediction.
        for fkey, group_run in itertools.groupby(ready, key=lambda x: family_key(inst(x))):
            run = list(group_run)
            members = [inst(x) for x in run]
            results = None
            if len(run) > 1 and fkey is not None:
                try:
                    results = evaluate_family(
                        members, target, layer, predict_cache=predict_cache, **kw
                    )
                except Exception:  # each member is then scored alone, and reports its failure
                    results = None
            for j, (x, member) in enumerate(zip(run, members, strict=True)):
                try:
                    res = results[j] if results is not None else None
                    if res is None:
                        res = evaluate_layer(
                            member, target, layer, predict_cache=predict_cache, **kw
                        )
                except Exception as e:
                    yield (
                        "failure",
                        f"{x.config.id} layer {layer}: failed ({type(e).__name__}: {e})",
                    )
                    continue
                m = x.config
                rec = _record(m, x.method, res, x.fit_s, target, dataset, layer, split, grid, prov)
                rec["key"] = record_key(
                    dataset, m.id, layer, split, data_hash=data_hash, version=prov["sparsebench"]
                )
                rec["dataset_hash"] = data_hash
                yield "record", rec


def _record(m, bound, res, fit_s, target, dataset, layer, split, grid, prov) -> dict[str, Any]:
    """The record of configuration ``m`` on one layer, from its metrics ``res``.

    The key and id are the configuration's as asked for (``gold``); the params are those of
    ``bound``, the configuration bound to the data (``gold`` with the data's ``alpha``).
    """
    per_head = res.pop("per_head")
    return {
        "key": "",
        "dataset": dataset,
        "method": m.name,
        "method_id": m.id,
        "params": bound.get_params(),
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
    }


def _ray_unit(target, train, dataset, layer, configs, kw):
    return list(run_unit(target, train, dataset, layer, configs, **kw))


def _on_ray(units, target, train, dataset, kw, address, num_cpus, gpus_per_task):
    """Run each unit as a Ray task; yields each unit's events as its task finishes."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
        )
    task = ray.remote(max_retries=3, retry_exceptions=False, num_cpus=1, num_gpus=gpus_per_task)(
        _ray_unit
    )
    tref, trainref = ray.put(target), ray.put(train)
    pending = [task.remote(tref, trainref, dataset, layer, configs, kw) for layer, configs in units]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])


def sweep_plan(
    data: QKData,
    *,
    methods: str = "*",
    grid: str = "quick",
    layers: list[int] | None = None,
    split: str = "eval",
) -> tuple[list[int], list[list[Method]]]:
    """A sweep's arguments checked against the data, before anything runs or is written.

    Returns:
        The layers and, per selected method, its configurations on this data.

    Raises:
        ValueError: for a layer out of range, a missing split, a ``methods`` that matches
            nothing (or nothing that runs on causal data), or a grid a method lacks.
        KeyError: for an unknown method or parameter in a spec.
    """
    layers = check_layers(data, layers)
    check_split(data, split)
    selected = select_methods(methods)
    plan = [configurations(name, grid, data.causal, params) for _, name, params in selected]
    if not any(plan):
        raise ValueError(
            f"--methods {methods!r} selects no method that supports causal attention, and the "
            "data is causal; choose others (`sparsebench methods` shows the tags)"
        )
    return layers, plan


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
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    fits: FitStore | None = None,
) -> dict[str, int]:
    """Run a grid sweep, appending one record per (configuration, layer) to ``out``.

    Args:
        data: the dataset (train split for fitting, ``split`` for scoring).
        out: JSON-lines record file; existing records are skipped.
        dataset: name in the records (default: the card's name).
        methods: what to sweep: a glob over method names, or globs and specs
            (``name:k=v``, those parameters fixed) separated by ``;``
            (:func:`~.runner.select_methods`).
        grid: grid setting (``quick``, ``paper``; ``default``: each default configuration).
        layers: layers to run (default: all); each in ``0 .. layers - 1``.
        split: split to score; the dataset must have it.
        batch_size: sequences per scoring batch.
        executor: ``local`` (in this process) or ``ray`` (one Ray task per layer and method;
            the driver alone writes ``out``, as each task finishes).
        address: Ray cluster address (``None``: start a local instance).
        gpus_per_task: GPUs each Ray task requests (so one timing task owns one GPU).
        num_cpus: CPUs of a local Ray instance (default: all).
        device: ``"cpu"`` or ``"cuda"``: where methods are fitted and scored (the records'
            ``device`` field says which).
        progress: show a progress bar.
        log: where messages go.
        fits: a :class:`~.runner.FitStore` of ``data`` (on ``device``) that keeps the sweep's
            fits for a later run on the same data (local executor only).

    Returns:
        ``{"done": records written now, "skipped": already present, "failed": errors}``.

    Raises:
        ValueError: for arguments that do not fit the data (:func:`sweep_plan`), a dataset
            name that is not a valid name, a device that is not available, or ``fits`` made
            for other data.
        RecordsLockedError: if another run is writing ``out``.

    The plan, the executor choice and the single writer stay in this one function: every
    record reaches ``out`` through ``take`` here, whichever executor produced it.
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    dataset = check_name(dataset or data.meta.get("name", "dataset"))
    resolve_device(device)
    layers, plan = sweep_plan(data, methods=methods, grid=grid, layers=layers, split=split)
    data_hash = data.content_hash
    longest = int(data.lengths.max())
    if executor == "local":  # Ray tasks move their own copy
        data = on_device(data, device)
    if fits is not None:
        if executor != "local":
            raise ValueError("fits: a FitStore lives in this process; use executor='local'")
        fits.check(data)
    target = data.split(split)
    if fits is not None:
        train = fits.train
    else:
        train = data.split("train") if "train" in data.split_names else None
    prov = {**provenance(), "device": device_label(device)}
    out = Path(out)
    version = prov["sparsebench"]

    def key(m: Method, layer: int) -> str:
        return record_key(dataset, m.id, layer, split, data_hash=data_hash, version=version)

    with records_writer(out) as records:
        # One unit per layer and method: its configurations not yet in the record file.
        units = []
        for layer in layers:
            for configs in plan:
                todo = [m for m in configs if key(m, layer) not in records]
                if todo:
                    units.append((layer, todo))
        total = sum(len(c) for _, c in units)
        skipped = sum(len(c) for c in plan) * len(layers) - total
        log(f"sweep {dataset}: {total} to run, {skipped} already in {out} ({executor})")
        kw = {
            "split": split,
            "grid": grid,
            "batch_size": batch_size,
            "prov": prov,
            "data_hash": data_hash,
            "device": device,
            "longest": longest,
        }
        bar = tqdm(total=total, disable=not progress, unit="config", desc=dataset)
        written = failed = 0

        def take(events):
            nonlocal written, failed
            for kind, item in events:
                if kind == "failure":
                    log(f"  {item}")
                    failed += 1
                elif records.add(item):
                    written += 1
                bar.update(1)

        if executor == "local":
            caches: dict[int, dict] = {}
            for layer, configs in units:
                # Gold graphs of a layer are computed once and shared by all its units.
                cache = caches.setdefault(layer, {})
                for old in [x for x in caches if x != layer]:
                    del caches[old]
                events = run_unit(
                    target, train, dataset, layer, configs, gold_cache=cache, fits=fits, **kw
                )
                take(events)
        else:
            ray_events = _on_ray(
                units, target, train, dataset, kw, address, num_cpus, gpus_per_task
            )
            for events in ray_events:
                take(events)
        bar.close()
        return {"done": written, "skipped": skipped, "failed": failed}
