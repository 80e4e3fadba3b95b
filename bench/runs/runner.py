"""The run loop shared by sweeps and accuracy runs: fit once, vary predict-time parameters.

A run scores many configurations of many methods. Configurations of one method that agree on
their fit-time parameters (every field not marked ``predict_time``) learn the same state, so
each such group is fitted once — per layer in a sweep, per model in an accuracy run — and its
members differ only in the predict-time parameters set on a copy of the fitted instance.
Results go to a record file (:class:`~.records.RecordFile`), one record per configuration,
keyed so that a run killed at any point resumes where it stopped. A key names the dataset
build (its content hash) and the sparsebench version, so records of another build or version
are never taken as done.

``--methods`` means the same in every command (:func:`select_methods`): a glob over method
names, or several globs and specs (``name:k=v,k=v``) separated by ``;``.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, NamedTuple

from sparsebench.datasets import QKData
from sparsebench.methods import Method, create, get, names, parse_spec, suggest

__all__ = [
    "FitStore",
    "Fitted",
    "configurations",
    "expand_grid",
    "fit_key",
    "fit_once",
    "group_by_fit",
    "record_identity",
    "record_key",
    "select_methods",
    "with_predict_params",
]


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


def configurations(
    name: str, grid: str, causal: bool, params: dict[str, Any] | None = None
) -> list[Method]:
    """The configurations of method ``name`` in ``grid`` (``"default"``: its default only).

    ``params`` fix parameters (a spec's ``k=v``): they replace those axes of the grid, and the
    other axes are still swept. Empty when the data is causal and the method does not support
    causal attention.
    """
    if causal and not get(name).tags.supports_causal:
        return []
    grid_params = [{}] if grid == "default" else expand_grid(name, grid, causal)
    out: dict[str, Method] = {}
    for p in grid_params:
        m = create(name, **{**p, **(params or {})})
        out.setdefault(m.id, m)
    return list(out.values())


def select_methods(
    methods: str, *, extra: Collection[str] = ()
) -> list[tuple[str, str, dict[str, Any]]]:
    """What ``--methods`` selects, as ``(spec, name, params)`` in the order given.

    ``methods`` holds items separated by ``;``: a glob over method names (an item without
    ``:`` may also list several separated by ``,``) or a spec ``name:k=v,k=v`` parsed by
    :func:`sparsebench.methods.parse_spec`. ``extra`` names more choices that take no
    parameters (the dense baselines of the speed harness).

    Raises:
        ValueError: for an empty selection, or an item that matches no method (with the
            closest names).
        KeyError: for an unknown method or parameter in a spec (``UnknownNameError``).
    """
    items = [x.strip() for x in methods.split(";")]
    items = [y.strip() for x in items for y in ([x] if ":" in x else x.split(",")) if y.strip()]
    if not items:
        raise ValueError("--methods is empty; give a glob such as '*' or names separated by ';'")
    known = [*extra, *names()]
    out: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for item in items:
        pattern, has_params, _ = item.partition(":")
        if has_params:
            if pattern.strip() in extra:
                raise ValueError(f"--methods {item!r}: {pattern.strip()} takes no parameters")
            name, params = parse_spec(item)
            out.setdefault(f"{name}:{sorted(params.items())!r}", (item, name, params))
            continue
        matched = [n for n in known if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            hint = suggest(pattern, known, otherwise="; `sparsebench methods` lists them")
            raise ValueError(f"--methods {pattern!r} matches no method{hint}")
        for n in matched:
            out.setdefault(f"{n}:[]", (n, n, {}))
    return list(out.values())


def record_key(
    dataset: str, method_id: str, layer: int, split: str, *, data_hash: str, version: str
) -> str:
    """Identity of a record: what a resumed run looks up (``layer=-1``: the whole model).

    ``data_hash`` is the dataset's content hash and ``version`` the sparsebench version, so a
    record of another dataset build or version is another record.
    """
    return f"{dataset}|{method_id}|layer={layer}|{split}|data={data_hash}|v={version}"


def record_identity(record: dict[str, Any]) -> tuple[str, str]:
    """``(dataset hash, sparsebench version)`` of a record; ``"unknown"`` where one is missing.

    Records written before datasets were hashed carry no ``dataset_hash``: they form their
    own identity ``"unknown"``.
    """
    return (
        str(record.get("dataset_hash") or "unknown"),
        str(record.get("sparsebench") or "unknown"),
    )


def fit_key(m: Method) -> tuple:
    """The fit-time parameters of ``m``: configurations with equal keys learn the same state."""
    return tuple((p, repr(getattr(m, p))) for p in m.fit_params())


def with_predict_params(fitted: Method, m: Method) -> Method:
    """The fitted instance with ``m``'s predict-time parameters (learned state kept)."""
    inst = copy.copy(fitted)
    fit = set(fitted.fit_params())
    for p, v in m.get_params().items():
        if p not in fit:
            setattr(inst, p, v)
    return inst


class FitStore:
    """Fitted states of one dataset, shared by the runs that use it.

    ``sparsebench run`` sweeps a dataset, then scores task accuracy on it: both need the same
    learned configurations fitted on the same train split. The sweep fits each group of
    configurations once per layer and stores the state here; the accuracy run takes it instead
    of fitting again. A state is looked up by method name, fit-time parameters
    (:func:`fit_key`) and layer, and handed out with the asking configuration's predict-time
    parameters (:func:`with_predict_params`). The store also holds the one train-split object
    both runs fit on, so methods that memoise work per split (the Sparsefinder projectors)
    share it too. Fitting is deterministic, so a stored state equals a new fit.

    Args:
        data: the dataset, on the device its runs use.
    """

    def __init__(self, data: QKData) -> None:
        self.data = data
        self.train = data.split("train") if "train" in data.split_names else None
        self._fits: dict[tuple, tuple[Method, float]] = {}

    def check(self, data: QKData) -> None:
        """Refuse a store made for another dataset (or another device's copy of it).

        Raises:
            ValueError: when ``data`` is not the object the store was made for.
        """
        if data is not self.data:
            raise ValueError(
                "fits: this FitStore was made for another dataset object; make one with "
                "FitStore(data) for the data the run uses (on its device)"
            )

    def fitted(self, m: Method, layer: int) -> Method:
        """``m`` (bound to the data) fitted on ``layer``, with ``m``'s predict-time parameters.

        Fits on the first request of its method and fit-time parameters; later requests reuse
        that state.

        Raises:
            ValueError: when ``m`` learns and the dataset has no train split.
        """
        key = (m.name, fit_key(m), layer)
        if key not in self._fits:
            if self.train is None:
                name = self.data.meta.get("name", "the dataset")
                raise ValueError(f"{m.name} learns, but {name} has no train split")
            t0 = time.perf_counter()
            state = m.clone().fit(self.train, layer)
            self._fits[key] = (state, time.perf_counter() - t0)
        return with_predict_params(self._fits[key][0], m)

    def fit_seconds(self, m: Method, layers: Iterable[int]) -> float:
        """Seconds the stored fits of ``m``'s group on ``layers`` took (0 for missing ones)."""
        return sum(self._fits.get((m.name, fit_key(m), i), (None, 0.0))[1] for i in layers)


def group_by_fit(configs: Iterable[Method]) -> list[list[Method]]:
    """Configurations grouped by method and fit-time parameters, in order of first appearance."""
    groups: dict[tuple, list[Method]] = {}
    for m in configs:
        groups.setdefault((m.name, fit_key(m)), []).append(m)
    return list(groups.values())


class Fitted(NamedTuple):
    """One configuration ready to predict.

    Attributes:
        config: the configuration as asked for (its id and parameters go in the record).
        method: ``config`` bound to the data (``Method.for_data``), unfitted.
        state: what ``fit`` returned for the group, carrying ``config``'s predict-time
            parameters; ``None`` when the configuration learns nothing (``method`` predicts as
            it is) or the fit failed.
        fit_s: seconds the group's fit took (0 when nothing was fitted).
        error: the exception the group's fit raised, or ``None``.
    """

    config: Method
    method: Method
    state: Any
    fit_s: float
    error: Exception | None


def fit_once(
    configs: Iterable[Method],
    data: QKData,
    fit: Callable[[Method], Any],
    bind: Callable[[Any, Method], Any],
) -> Iterator[list[Fitted]]:
    """Fit each group of ``configs`` (:func:`group_by_fit`) once and yield its members.

    Every configuration is first bound to ``data`` (``Method.for_data``, e.g. the ``gold`` row
    takes the data's α); the records keep the configuration as asked for. A group is fitted
    only when it is reached, so a run holds one fit at a time; a group whose configurations
    learn nothing is not fitted.

    Args:
        configs: the configurations, in run order.
        data: the dataset the configurations run on.
        fit: ``fit(method)`` -> the fitted state of the group ``method`` (bound) leads, e.g.
            the instance fitted on one layer, or one per layer; it may raise.
        bind: ``bind(state, method)`` -> ``state`` with ``method``'s predict-time parameters
            (see :func:`with_predict_params`). The group's first member gets ``state`` itself.

    Yields:
        The members of each group as :class:`Fitted`, one list per group.
    """
    for group in group_by_fit(configs):
        bound = [m.for_data(data) for m in group]
        first = bound[0]
        if not first.learns:
            yield [Fitted(m, b, None, 0.0, None) for m, b in zip(group, bound, strict=True)]
            continue
        try:
            t0 = time.perf_counter()
            state = fit(first)
            fit_s = time.perf_counter() - t0
        except Exception as e:  # one broken configuration must not end a run
            yield [Fitted(m, b, None, 0.0, e) for m, b in zip(group, bound, strict=True)]
            continue
        yield [
            Fitted(m, b, state if b is first else bind(state, b), fit_s, None)
            for m, b in zip(group, bound, strict=True)
        ]
