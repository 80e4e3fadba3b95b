"""The method contract: a dataclass of parameters, declared tags and grids, fit and predict."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

import torch
from torch import Tensor

from ._checks import check_qk, to_scoring
from ._errors import UnknownNameError, suggest
from ._params import check_values, param
from .graph import Graph
from .parts import Band, Globals

if TYPE_CHECKING:  # type hints only: methods never import the datasets package at run time
    from sparsebench.datasets import QKData

__all__ = [
    "MLM_WINDOWS",
    "MT_WINDOWS",
    "Composable",
    "Grid",
    "Method",
    "Tags",
    "check_qk",
    "param",
    "predict_time",
]

Grid = Mapping[str, Mapping[str, list[Any]]]

#: The paper's window sweep on top of every method, translation (MT) and masked-LM settings.
MT_WINDOWS = [0, 1, 3, 5, 7, 9, 11, 15, 19, 23, 27]
MLM_WINDOWS = [0, 3, 11, 25]


@dataclass(frozen=True)
class Tags:
    """Declared capabilities of a method (data, not flags set in ``__init__``).

    Whether a method has a fit step at all is :attr:`Method.learns` (an instance may learn for
    some parameters only); ``requires_fit`` says that ``predict`` refuses to run before ``fit``.

    Attributes:
        requires_fit: ``fit`` must run on training data before ``predict``.
        supports_causal: predicts valid graphs for causal (decoder) attention.
        stochastic: uses randomness, which ``seed`` fixes; a method without it predicts the
            same graph for every seed (a contract test checks this).
        reference: a reference row (gold, full, oracles), kept apart in leaderboards.
        expected_failures: contract check name -> reason, for checks that cannot hold.
    """

    requires_fit: bool = False
    supports_causal: bool = True
    stochastic: bool = False
    reference: bool = False
    expected_failures: Mapping[str, str] = field(default_factory=dict)


def predict_time(default: Any, **bounds: Any) -> Any:
    """A dataclass field that only matters at predict time (no refit when it changes).

    ``bounds`` declare its range as for :func:`param` (``min``, ``max``, ``above``, ``choices``).
    """
    return param(default, refit=False, **bounds)


@dataclass(kw_only=True)
class Method:
    """Base class of every method. Fields of the dataclass are its parameters.

    Subclasses set ``name`` (through :func:`register`), ``tags`` and ``grid``, and implement
    ``_predict``; learned methods also implement ``fit``. Learned state lives in attributes
    that end in ``_``. ``complexity`` states what one ``predict`` costs (see below).

    Parameters are checked when an instance is made (``create``, ``clone``, ``from_spec``) and
    again before ``predict`` and ``fit`` do any work (:meth:`validate`): each field against its
    annotation and the bounds declared with :func:`param` / :func:`predict_time`.
    """

    name: ClassVar[str] = ""
    #: Name shown in tables and plots when it differs from the registry name.
    label: ClassVar[str] = ""
    tags: ClassVar[Tags] = Tags()
    grid: ClassVar[Grid] = {}
    #: Cost of ``predict`` per sequence and head, beyond the inputs: ``{"time": ..., "memory":
    #: ...}`` in big-O of N (length), d (head dim), r (projection dim), w (window), k (keys or
    #: clusters kept per row), b (block size), C (clusters or buckets), s (rows of a slab, a
    #: fixed element budget) and |G| (output edges); the method's docstring names any other
    #: letter. Memory counts the working set and the output graph; structured parts (a band,
    #: global tokens) are descriptions, O(1) until a kernel lays them out. ``"?"``: undeclared.
    complexity: ClassVar[Mapping[str, str]] = {"time": "?", "memory": "?"}
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    # -- parameters ----------------------------------------------------------------------
    def validate(self) -> Self:
        """Check every parameter's type and declared range, then the method's own rules.

        Returns:
            ``self``.

        Raises:
            ValueError: one line naming the method, the parameter and its valid range.
        """
        check_values(self)
        self._check_values()
        return self

    def _check_values(self) -> None:
        """Hook: checks that relate several parameters (single ranges are declared on fields)."""

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the parameters (the dataclass fields)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_params(cls, params: Iterable[str]) -> None:
        """Raise :class:`UnknownNameError` for names in ``params`` that are not parameters."""
        known = cls.param_names()
        for p in params:
            if p not in known:
                raise UnknownNameError(
                    f"method {cls.name!r} has no parameter {p!r}{suggest(p, known)} "
                    f"(parameters: {', '.join(known)})"
                )

    def get_params(self) -> dict[str, Any]:
        """Parameters as a dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def clone(self, **changes: Any) -> Self:
        """A new, unfitted instance with some parameters changed."""
        self.check_params(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def fit_params(cls) -> list[str]:
        """Parameters that change what ``fit`` learns (a change needs a refit)."""
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get("refit", True)]

    @property
    def id(self) -> str:
        """Registry name plus the non-default parameters, e.g. ``window[w=16]``."""
        changed = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # Compare by type, not identity, with the MISSING sentinel: a class sent to another
            # process by value (e.g. to a Ray worker) carries its own copy of it.
            if callable(f.default_factory):
                default = f.default_factory()
            elif type(f.default) is type(dataclasses.MISSING):
                default = None
            else:
                default = f.default
            if value != default:
                changed.append(f"{f.name}={_fmt(value)}")
        return f"{self.name}[{','.join(sorted(changed))}]" if changed else self.name

    # -- behaviour -----------------------------------------------------------------------
    @property
    def learns(self) -> bool:
        """Whether the method has a fit step: harnesses call ``fit`` before ``predict``.

        True when the tags require a fit, or its class defines ``fit`` (which may learn for
        some parameters only, like DSA's ``fit_projection`` or a ``space="projected"``
        baseline). The one name for "has a fit step".
        """
        return self.tags.requires_fit or type(self).fit is not Method.fit

    def for_data(self, data: QKData) -> Self:
        """The method bound to what it needs from the dataset; harnesses call it first.

        Called with the :class:`~sparsebench.datasets.QKData` before ``fit`` and ``predict``
        (e.g. the ``gold`` row takes the data's α). The default needs nothing and returns
        ``self``; an override returns a :meth:`clone`, leaving ``self`` unchanged.
        """
        return self

    def fit(self, train: QKData, layer: int) -> Self:
        """Learn from one layer of the training split. The default learns nothing."""
        return self

    def predict(
        self,
        q: Tensor,
        k: Tensor,
        *,
        lengths: Tensor | None = None,
        causal: bool = False,
        cache: dict | None = None,
    ) -> Graph:
        """Predict the attention graph of one layer.

        Args:
            q: queries ``(B, H, N, D)``, unscaled.
            k: keys ``(B, H, M, D)``.
            lengths: ``(B,)`` valid lengths, or ``None`` when nothing is padded.
            causal: whether the layer is a decoder's self-attention.
            cache: a dict the caller keeps for one ``(q, k, lengths, causal)`` and one fitted
                state. Configurations that differ only in what :meth:`_compose` adds (window,
                global tokens) then share one base prediction; it keeps the latest one only, so
                order calls with the composition parameters varying fastest. After a call,
                ``cache["reused_s"]`` is the time the reused base took to compute (0 when it
                was computed now), so timings stay honest. A sweep uses this.

        Returns:
            The predicted :class:`Graph`, carrying ``lengths`` and ``causal``. Float16 and
            bfloat16 inputs are predicted from their float32 values (their scores would
            overflow in half precision).

        Raises:
            ValueError: for invalid inputs or parameters, before any work is done.
        """
        lengths = check_qk(q, k, lengths=lengths, causal=causal)
        self.validate()
        q, k = to_scoring(q), to_scoring(k)
        if causal and not self.tags.supports_causal:
            raise NotImplementedError(f"{self.name} does not support causal attention")
        if self.tags.requires_fit and not self._is_fitted():
            raise RuntimeError(f"{self.id} must be fitted first: call .fit(train, layer)")
        with torch.no_grad():
            key = self._base_key() if cache is not None else None
            hit = None if key is None else cache.get(key)
            if hit is None:
                t0 = time.perf_counter()
                graph = self._predict(q, k, lengths=lengths, causal=causal)
                if key is not None:
                    cache.clear()
                    cache[key] = (graph, time.perf_counter() - t0)
                    cache["reused_s"] = 0.0
            else:
                graph, cache["reused_s"] = hit
            graph = self._compose(graph, q.shape, lengths)
        return graph.with_validity(lengths=lengths, causal=causal)

    def _predict(self, q: Tensor, k: Tensor, *, lengths: Tensor | None, causal: bool) -> Graph:
        raise NotImplementedError

    def _compose(self, graph: Graph, shape, lengths) -> Graph:
        return graph

    def _base_key(self) -> tuple | None:
        """What ``_predict`` depends on, for ``predict(cache=...)``; ``None``: do not cache."""
        return None

    def _is_fitted(self) -> bool:
        return any(a.endswith("_") and not a.startswith("_") for a in vars(self))

    def _generator(self, *salt: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(hash((self.seed, *salt)) & 0x7FFFFFFF)
        return g


def window_band(w: int) -> Band | None:
    """The paper's window of ``w`` tokens as a band: ``j - i`` in ``[(-w)//2 + 1, w//2]``.

    An odd ``w`` is symmetric (``|i - j| <= (w-1)/2``); an even ``w`` reaches one token further
    ahead than behind (``w=4``: ``j - i`` in ``{-1, 0, 1, 2}``). ``w = 0`` is no window.
    """
    if w < 0:
        raise ValueError(f"window w must be >= 0, got {w}")
    if w == 0:
        return None
    return Band((-w) // 2 + 1, w // 2)


def global_positions(lengths: Tensor | None, B: int, N: int, n_global: int) -> Globals | None:
    """Global tokens: ``1`` = the first token, ``2`` = the first and the last real token."""
    if n_global not in (0, 1, 2):
        raise ValueError(
            f"global_tokens must be 0, 1 (first) or 2 (first and last), got {n_global}"
        )
    if n_global == 0:
        return None
    L = lengths if lengths is not None else torch.full((B,), N, dtype=torch.long)
    first = torch.where(L > 0, 0, -1)
    if n_global == 1:
        return Globals(first.view(B, 1))
    return Globals(torch.stack([first, L - 1], dim=1))  # length 0 gives -1: ignored


@dataclass(kw_only=True)
class Composable(Method):
    """A method whose graph can be widened with a window and global tokens, as in the paper.

    The ``window`` option is the same band as the ``window`` baseline's ``w`` parameter
    (:func:`window_band`); the baseline keeps the name ``w`` because it is its only structural
    parameter and its method ids (``window[w=16]``) key published results and CLI specs.

    Attributes:
        window: width ``w`` of the local band added to the prediction (0 = none).
        global_tokens: 0 = none, 1 = first token, 2 = first and last real token; their rows and
            columns are added to the prediction.
    """

    window: int = predict_time(0, min=0)
    global_tokens: int = predict_time(0, choices=(0, 1, 2))

    def _base_key(self) -> tuple | None:
        # _predict never reads the composition parameters; everything else may matter.
        skip = ("window", "global_tokens")
        return (self.name, *((p, repr(v)) for p, v in self.get_params().items() if p not in skip))

    def _compose(self, graph: Graph, shape, lengths) -> Graph:
        extra = [
            window_band(self.window),
            global_positions(lengths, shape[0], shape[2], self.global_tokens),
        ]
        return graph.union(*[p for p in extra if p is not None])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}" if math.isfinite(v) else str(v)
    return str(v)
