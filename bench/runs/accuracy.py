"""Task accuracy when a method's predicted graph replaces attention at test time.

What is scored is the ``task`` of the dataset's entry in :data:`sparsebench.datasets.DATASETS`,
on the model the dataset was extracted from. In every layer of that model, α-entmax attention
is restricted to the graph the method predicts from that layer's own queries and keys (learned
methods are fitted on the training split of the model's Q/K dataset, layer by layer). The
bundled models are scored on windows of the held-out plays: next-token loss, accuracy and
perplexity for the decoder (``next-token``), masked-token loss and accuracy for the encoder
(``masked-token``, with a fixed, seeded masking). For the ``minilm-entmax`` and
``minilm-entmax-ft`` encoders (``hf`` extra) the figure is embedding fidelity
(``embedding-fidelity``): the cosine similarity between each held-out sentence's mean-pooled
embedding under the restricted attention and under the reference, the same model's full
α-entmax attention (for ``minilm-entmax-ft`` the fine-tuned model, not the softmax one). A
query whose predicted row is empty attends to nothing — its attention output is zero — and
never falls back to full attention.

The reference row ``gold`` restricts attention to the gold α-entmax graph, which leaves it
unchanged: it reproduces full attention.

Each record keeps, besides the totals, the figures of every evaluation window (``per_window``:
summed loss, correct and scored tokens per window; or the cosine of each sentence) and the
number of tokens scored (``num_tokens``), from which a report computes bootstrap intervals over
windows and paired intervals of the change against ``gold``. ``max_windows=None`` scores the
whole held-out split. :func:`frontier_configs` picks, from a sweep, the configurations a
leaderboard shows, so that those can be scored on the whole split (``only``);
:func:`reported_configs` the one configuration per method that a leaderboard row reports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from sparsebench import datasets
from sparsebench.datasets import QKData
from sparsebench.methods import Method, get

from ..evaluate import device_label, on_device, resolve_device
from .records import provenance, read_records, records_writer
from .runner import (
    FitStore,
    configurations,
    fit_once,
    record_key,
    select_methods,
    with_predict_params,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["accuracy_sweep", "frontier_configs", "reported_configs", "restrict_with"]


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
    only: Iterable[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    data: QKData | None = None,
    fits: FitStore | None = None,
) -> dict[str, int]:
    """Score every configuration of the grid by the task accuracy of a dataset's model.

    ``model_name`` names a dataset of :data:`sparsebench.datasets.DATASETS` whose ``task`` is
    set; learned methods are fitted on its train split, once per group of configurations that
    share fit-time parameters. ``grid="default"`` runs each method's default configuration only
    (the quick mode of ``sparsebench run``). ``max_windows`` scores the first windows (for
    ``minilm-entmax``: that many sentences, evenly spaced) of the held-out split; ``None``
    scores all of it. ``only`` scores just those configuration ids (e.g. from
    :func:`frontier_configs`), looked up in every grid of the selected methods. ``device``
    (``"cpu"`` or ``"cuda"``) is where the model runs and methods are fitted and predict.
    ``data`` is the model's Q/K dataset when it is loaded already (default: loaded by name);
    ``fits`` a :class:`~.runner.FitStore` of that data whose fits (e.g. a sweep's) are taken
    instead of fitting again; a reused fit's record keeps the seconds the fit took.

    One record per configuration goes to ``out`` (resumable, one writer at a time); the
    ``gold`` row runs first and is the reference of the ``delta_`` figures. Records are keyed
    with the content hash of the model's Q/K dataset and the sparsebench version. The run's
    steps (plan, fit, score, write) stay in this one function so that what is kept between
    configurations — the current fit, the gold reference — is visible in one place.

    Raises:
        DatasetError: for an unknown dataset name.
        ValueError: for a dataset without a task, ``max_windows`` below 1, ``methods`` that
            matches nothing, an ``only`` id that no grid of the selected methods has, a
            device that is not available, or ``data`` / ``fits`` of another dataset.
        RecordsLockedError: if another run is writing ``out``.
    """
    if max_windows is not None and (isinstance(max_windows, bool) or max_windows < 1):
        raise ValueError(f"max_windows must be a positive count or None (all), got {max_windows}")
    resolve_device(device)
    spec = _scored(model_name)
    chosen = [(name, params) for _, name, params in select_methods(methods) if name != "gold"]
    wanted = None if only is None else _check_only(only)
    if data is None:
        data = datasets.load(model_name, log=log)
    elif data.meta.get("name") != model_name:
        raise ValueError(
            f"data is the dataset {data.meta.get('name')!r}, not {model_name!r}; pass the "
            "model's own dataset, or none to load it"
        )
    data = on_device(data, device)
    if fits is not None:
        fits.check(data)
    n_layers, causal, run_task = _task(spec, data, max_windows, device)
    train = fits.train if fits is not None else data.split("train")
    split = f"eval-windows={max_windows or 'all'}"
    prov = {**provenance(), "device": device_label(device)}
    data_hash, version = data.content_hash, prov["sparsebench"]

    def key(m: Method) -> str:
        return record_key(model_name, m.id, -1, split, data_hash=data_hash, version=version)

    def fit(m: Method) -> list[Method]:
        if fits is not None:
            return [fits.fitted(m, i) for i in range(n_layers)]
        return [m.clone().fit(train, i) for i in range(n_layers)]

    def bind(layers: list[Method], m: Method) -> list[Method]:
        return [with_predict_params(f, m) for f in layers]

    # The gold row runs first: it is the reference of the other rows' delta_ figures.
    configs = configurations("gold", grid, causal)
    if wanted is None:
        configs += [
            m for name, params in chosen for m in configurations(name, grid, causal, params)
        ]
    else:
        configs += _only_configs(wanted, chosen, causal)
    with records_writer(out) as records:
        todo = [m for m in configs if key(m) not in records]
        log(
            f"accuracy {model_name}: {len(todo)} configurations to run, "
            f"{len(configs) - len(todo)} already in {out}"
        )
        done = read_records(out, keyed=True)
        reference = {r["method_id"]: r for r in done if r["key"] in {key(m) for m in configs}}
        written = failed = 0
        bar = tqdm(
            total=len(todo), disable=not progress, unit="config", desc=f"accuracy {model_name}"
        )
        # Configurations that differ only in predict-time parameters share one fit of all
        # layers, run one after another; only the current fit is kept.
        for group in fit_once(todo, data, fit, bind):
            for m, method, fitted, fit_s, error in group:
                bar.update(1)
                if fits is not None and fitted is not None:
                    fit_s = fits.fit_seconds(method, range(n_layers))
                if error is not None:
                    failed += 1
                    log(f"  {m.id}: fit failed ({type(error).__name__}: {error})")
                    continue
                t0 = time.perf_counter()
                try:
                    res = run_task(restrict_with([method] * n_layers if fitted is None else fitted))
                except Exception as e:  # one broken configuration must not end the sweep
                    failed += 1
                    log(f"  {m.id}: failed ({type(e).__name__}: {e})")
                    continue
                gold = reference.get("gold")
                rec = _record(model_name, m, method, split, spec.task, res, gold, prov)
                rec.update(key=key(m), dataset_hash=data_hash, fit_s=fit_s)
                rec["total_s"] = time.perf_counter() - t0 + (fit_s if m is group[0].config else 0.0)
                if m.name == "gold":
                    reference["gold"] = rec
                if records.add(rec):
                    written += 1
        bar.close()
    return {"done": written, "skipped": len(configs) - len(todo), "failed": failed}


def _scored(name: str) -> datasets.DatasetSpec:
    """The table entry of dataset ``name``, which must have a task."""
    spec = datasets.dataset_spec(name)
    if spec.task is None:
        scored = [n for n, s in datasets.DATASETS.items() if s.task is not None]
        raise ValueError(
            f"dataset {name!r} has no task to score; these have one: {', '.join(scored)}"
        )
    return spec


def _record(dataset, m, bound, split, task, res, gold, prov) -> dict:
    """The record of configuration ``m``: its figures ``res``, and their change from ``gold``'s.

    Key and id are the configuration's as asked for; params are those of ``bound`` (``m``
    bound to the data, so the ``gold`` row shows the data's ``alpha``).
    """
    return {
        "kind": "accuracy",
        "dataset": dataset,
        "method": m.name,
        "method_id": m.id,
        "params": bound.get_params(),
        "split": split,
        "task": task,
        **res,
        **{
            f"delta_{f}": None if gold is None else res[f] - gold[f]
            for f in ("accuracy", "loss", "cosine")
            if f in res
        },
        **prov,
    }


def _task(
    spec: datasets.DatasetSpec, data, max_windows: int | None, device: str = "cpu"
) -> tuple[int, bool, Callable]:
    """Layers, causality and ``run(restrict) -> figures`` of a dataset's task on ``device``."""
    if spec.task == "embedding-fidelity":
        from sparsebench.datasets.minilm import (
            embedding_fidelity,
            evenly_spaced,
            minilm_model_path,
            minilm_texts,
        )
        from sparsebench.datasets.minilm_ft import finetuned_model_dir

        model_dir = minilm_model_path()
        if spec.name == "minilm-entmax-ft":  # the base with the delta the data was built from
            model_dir = finetuned_model_dir(expect_sha256=data.meta.get("delta_sha256", ""))
        # Every held-out sentence, or that many evenly spaced (32: the sentences of the
        # dataset's eval split).
        texts = minilm_texts("eval")
        if max_windows is not None:
            texts = evenly_spaced(texts, min(max_windows, len(texts)))

        def run(restrict):
            return embedding_fidelity(model_dir, texts, restrict, alpha=data.alpha, device=device)

        return data.num_layers, data.causal, run
    if spec.task not in ("next-token", "masked-token"):
        raise ValueError(f"no accuracy harness for the task {spec.task!r} of {spec.name}")

    from sparsebench.datasets.shakespeare import load_model, load_tokenizer
    from sparsebench.datasets.train import evaluate_model, token_streams

    model = load_model(spec.model).to(device)
    streams = token_streams(load_tokenizer())["eval"]

    def run(restrict):
        return evaluate_model(
            model, streams, seq_len=model.cfg.max_len, restrict=restrict, max_windows=max_windows
        )

    return model.cfg.n_layers, model.cfg.causal, run


def _check_only(only: Iterable[str]) -> list[str]:
    """The configuration ids of ``only``, once each; refuses a plain string or an empty list."""
    if isinstance(only, str):
        raise ValueError(f"only must be a list of configuration ids, got the string {only!r}")
    wanted = list(dict.fromkeys(str(x) for x in only))
    if not wanted:
        raise ValueError("only is empty; give configuration ids, or None for the whole grid")
    return wanted


def _only_configs(wanted: list[str], chosen: list[tuple[str, dict]], causal: bool) -> list[Method]:
    """The configurations with the ``wanted`` ids among every grid of the ``chosen`` methods.

    Ids of methods that ``chosen`` does not select (and of ``gold``, which always runs) are
    left out.

    Raises:
        ValueError: for an id of a selected method that none of its grids holds.
    """
    found: dict[str, Method] = {}
    selected = {name for name, _ in chosen}
    for name, params in chosen:
        for setting in ("default", *get(name).grid):
            for m in configurations(name, setting, causal, params):
                found.setdefault(m.id, m)
    out = []
    for cid in wanted:
        name = cid.split("[", 1)[0]
        if name == "gold" or name not in selected:
            continue
        if cid not in found:
            raise ValueError(
                f"configuration {cid!r} is in no grid of {name}; score it on its own with "
                f"--methods '{name}:k=v' (its parameters), or leave it out"
            )
        out.append(found[cid])
    return out


def _sweep_averages(records: pd.DataFrame) -> pd.DataFrame:
    """Layer averages of one dataset's sweep records, of its newest build and version.

    Accuracy records and records without a layer are left out, as the leaderboard leaves them.

    Raises:
        ValueError: for records of more than one dataset.
    """
    from ..report.summary import layer_average, newest_identity

    df = records
    if "kind" in df.columns:
        df = df[df["kind"].isna() | (df["kind"] != "accuracy")]
    if "layer" in df.columns:
        df = df[df["layer"].notna()]
    if df.empty:
        return df
    names = sorted(df["dataset"].dropna().unique())
    if len(names) > 1:
        raise ValueError(
            f"records hold {len(names)} datasets ({', '.join(names)}); give one dataset's records"
        )
    df, _ = newest_identity(df.reset_index(drop=True))
    return layer_average(df)


def frontier_configs(records: pd.DataFrame) -> dict[str, list[str]]:
    """Per method, the configurations a leaderboard shows, from one dataset's sweep records.

    They are the method's recall-sparsity Pareto frontier (layer-averaged, of the newest
    dataset build and version, as the leaderboard takes them) and its sparsest configurations
    at recall 0.90 / 0.95 / 0.99 (frontier points themselves, listed once).

    Args:
        records: sweep records of one dataset (:func:`sparsebench.bench.report.load_records`);
            accuracy records among them are left out.

    Returns:
        ``{method: [configuration ids, by increasing sparsity]}``.

    Raises:
        ValueError: for records of more than one dataset.
    """
    from ..report.summary import THRESHOLDS, pareto_frontier, summarize

    avg = _sweep_averages(records)
    if avg.empty:
        return {}
    out: dict[str, list[str]] = {}
    for method, group in pareto_frontier(avg).groupby("method", sort=False):
        out[str(method)] = [str(x) for x in group["method_id"]]
    for _, row in summarize(avg, THRESHOLDS).iterrows():
        ids = out.setdefault(str(row["method"]), [])
        for t in THRESHOLDS:
            cid = row[f"config@{t:.2f}"]
            if cid and cid not in ids:
                ids.append(str(cid))
    return out


def reported_configs(records: pd.DataFrame) -> dict[str, str]:
    """Per method, the configuration its leaderboard row reports, from one dataset's sweep.

    That is its sparsest configuration at recall 0.95 or, where none reaches 0.95, its
    best-recall one (layer-averaged, of the newest dataset build and version): the
    configuration whose accuracy, output error and times the leaderboard shows. ``sparsebench
    run`` scores the task accuracy of these.

    Args:
        records: sweep records of one dataset (:func:`sparsebench.bench.report.load_records`).

    Returns:
        ``{method: configuration id}``.

    Raises:
        ValueError: for records of more than one dataset.
    """
    from ..report.summary import summarize

    avg = _sweep_averages(records)
    if avg.empty:
        return {}
    out: dict[str, str] = {}
    for _, row in summarize(avg, (0.95,)).iterrows():
        cid = row["config@0.95"]
        if not cid:
            mine = avg[(avg["method"] == row["method"]) & (avg["dataset"] == row["dataset"])]
            cid = mine.loc[mine["recall"].idxmax(), "method_id"]
        out[str(row["method"])] = str(cid)
    return out
