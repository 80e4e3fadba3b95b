"""Task accuracy when a method's predicted graph replaces attention at test time.

In every layer of a bundled model, α-entmax attention is restricted to the graph the method
predicts from that layer's own queries and keys (learned methods are fitted on the training
split of the model's Q/K dataset, layer by layer). The model is then scored on windows of the
held-out plays: next-token loss, accuracy and perplexity for the decoder, masked-token loss and
accuracy for the encoder (with a fixed, seeded masking). For the ``minilm-entmax`` encoder (``hf``
extra) the figure is embedding fidelity: the cosine similarity between each held-out sentence's
mean-pooled embedding under full α-entmax attention and under the restricted attention. A query
whose predicted row is empty attends to nothing — its attention output is zero — and never
falls back to full attention.

The reference row ``gold`` restricts attention to the gold α-entmax graph, which leaves it
unchanged: it reproduces full attention.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from sparsebench.methods import Method, create, get, names

from .records import append_record, provenance, read_records, repair_tail
from .sweep import _fit_key, _with_predict_params, expand_grid, record_key

__all__ = ["accuracy_sweep", "restrict_with"]


def restrict_with(fitted: list[Method]) -> Callable:
    """A model ``restrict`` hook that asks ``fitted[layer]`` for each layer's graph."""

    def restrict(layer, q, k, lengths, causal):
        return fitted[layer].predict(q, k, lengths=lengths, causal=causal).to_dense()

    return restrict


def accuracy_sweep(
    model_name: str,
    out: str | os.PathLike,
    *,
    methods: str = "*",
    grid: str = "quick",
    max_windows: int | None = 32,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Score every configuration of the grid by the bundled model's task accuracy.

    ``grid="default"`` runs each method's default configuration only (the quick mode of
    ``sparsebench run``). One record per configuration goes to ``out`` (resumable).
    """
    from sparsebench import datasets

    n_layers, causal, task, run_task = _task(model_name, max_windows)
    data = datasets.load(model_name, log=log)
    train = data.split("train")
    out = Path(out)
    repair_tail(out)
    done = {r.get("key") for r in read_records(out)}
    split = f"eval-windows={max_windows or 'all'}"

    configs: list[Method] = []
    for name in ["gold", *[n for n in names(methods) if n != "gold"]]:
        cls = get(name)
        if causal and not cls.tags.supports_causal:
            continue
        params = [{}] if grid == "default" else expand_grid(name, grid, causal)
        configs += [create(name, **p) for p in params]
    todo = [m for m in configs if record_key(model_name, m.id, -1, split) not in done]
    log(
        f"accuracy {model_name}: {len(todo)} configurations to run, "
        f"{len(configs) - len(todo)} already in {out}"
    )
    reference = {r["method_id"]: r for r in read_records(out) if r.get("split") == split}
    prov = provenance()
    written = failed = 0
    # Configurations that differ only in predict-time parameters share one fit per layer:
    # run them one after another and keep only the current fit.
    order: dict[tuple, list[Method]] = {}
    for m in todo:
        order.setdefault((m.name, _fit_key(m)) if m.learns else (m.id,), []).append(m)
    todo = [m for group in order.values() for m in group]
    fit_key, fit = None, None
    for m in tqdm(todo, disable=not progress, unit="config", desc=f"accuracy {model_name}"):
        t0 = time.perf_counter()
        try:
            if m.learns:
                key = (m.name, _fit_key(m))
                if key != fit_key:
                    fit_key, fit = key, None
                    layers = [m.clone().fit(train, i) for i in range(n_layers)]
                    fit = (layers, time.perf_counter() - t0)
                if fit is None:
                    raise RuntimeError("fitting this configuration's group failed (above)")
                fitted = [_with_predict_params(f, m) for f in fit[0]]
                fit_s = fit[1]
            else:
                fitted, fit_s = [m] * n_layers, 0.0
            res = run_task(restrict_with(fitted))
        except Exception as e:  # one broken configuration must not end the sweep
            failed += 1
            log(f"  {m.id}: failed ({type(e).__name__}: {e})")
            continue
        gold = reference.get("gold")
        rec = {
            "key": record_key(model_name, m.id, -1, split),
            "kind": "accuracy",
            "dataset": model_name,
            "method": m.name,
            "method_id": m.id,
            "params": m.get_params(),
            "split": split,
            "task": task,
            **res,
            **{
                f"delta_{f}": None if gold is None else res[f] - gold[f]
                for f in ("accuracy", "loss", "cosine")
                if f in res
            },
            "fit_s": fit_s,
            "total_s": time.perf_counter() - t0,
            **prov,
        }
        if m.name == "gold":
            reference["gold"] = rec
        append_record(out, rec)
        written += 1
    return {"done": written, "skipped": len(configs) - len(todo), "failed": failed}


def _task(model_name: str, max_windows: int | None) -> tuple[int, bool, str, Callable]:
    """Layers, causality, task name and ``run(restrict) -> figures`` of a model."""
    if model_name == "minilm-entmax":
        from sparsebench.datasets.hf import (
            _spread,
            embedding_fidelity,
            minilm_model_path,
            minilm_texts,
        )

        model_dir = minilm_model_path()
        # The held-out sentences of the dataset's eval split (the same even spacing).
        texts = _spread(minilm_texts("eval"), max_windows or 32)

        def run(restrict):
            return embedding_fidelity(model_dir, texts, restrict)

        return 6, False, "embedding-fidelity", run

    from sparsebench.datasets.shakespeare import load_model, load_tokenizer
    from sparsebench.datasets.train import evaluate_model, token_streams

    model = load_model(model_name)
    streams = token_streams(load_tokenizer())["eval"]

    def run(restrict):
        return evaluate_model(
            model, streams, seq_len=model.cfg.max_len, restrict=restrict, max_windows=max_windows
        )

    task = "next-token" if model.cfg.causal else "masked-token"
    return model.cfg.n_layers, model.cfg.causal, task, run
