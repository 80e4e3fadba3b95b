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
from collections.abc import Callable
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
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Run a grid sweep, appending one record per (configuration, layer) to ``out``.

    Returns:
        ``{"done": records written now, "skipped": already present, "failed": errors}``.
    """
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
    todo = [
        (layer, m)
        for layer in layers
        for _, configs in plan
        for m in configs
        if record_key(dataset, m.id, layer, split) not in done
    ]
    skipped = sum(len(c) for _, c in plan) * len(layers) - len(todo)
    log(f"sweep {dataset}: {len(todo)} to run, {skipped} already in {out}")
    prov = provenance()
    bar = tqdm(total=len(todo), disable=not progress, unit="config", desc=dataset)
    written = failed = 0
    for layer in layers:
        gold_cache: dict = {}
        for _, configs in plan:
            pending = [m for m in configs if record_key(dataset, m.id, layer, split) not in done]
            groups: dict[tuple, list[Method]] = {}
            for m in pending:
                groups.setdefault(_fit_key(m), []).append(m)
            for group in groups.values():
                fitted, fit_s = group[0], 0.0
                needs_fit = fitted.tags.requires_fit or fitted.tags.learned
                if needs_fit:
                    if train is None:
                        raise ValueError(f"{fitted.name} learns, but {dataset} has no train split")
                    t0 = time.perf_counter()
                    fitted = fitted.clone().fit(train, layer)
                    fit_s = time.perf_counter() - t0
                for m in group:
                    inst = fitted
                    if needs_fit and m is not group[0]:
                        inst = _with_predict_params(fitted, m)
                    try:
                        res = evaluate_layer(
                            inst,
                            target,
                            layer,
                            batch_size=batch_size,
                            block_size=BLOCK_SIZE,
                            gold_cache=gold_cache,
                        )
                    except Exception as e:  # one broken configuration must not end a sweep
                        failed += 1
                        log(f"  {m.id} layer {layer}: failed ({type(e).__name__}: {e})")
                        bar.update(1)
                        continue
                    per_head = res.pop("per_head")
                    rec = {
                        "key": record_key(dataset, m.id, layer, split),
                        "dataset": dataset,
                        "method": m.name,
                        "method_id": m.id,
                        "params": m.get_params(),
                        "layer": layer,
                        "split": split,
                        "grid": grid,
                        "causal": data.causal,
                        "num_sequences": len(target),
                        "block_size": BLOCK_SIZE,
                        **res,
                        "fit_s": fit_s,
                        "per_head": per_head,
                        "seed": m.seed,
                        **prov,
                    }
                    append_record(out, rec)
                    done.add(rec["key"])
                    written += 1
                    bar.update(1)
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
