"""What a speed case is: its fields, the dense baselines, the gold suite's cases, and the check.

A case is a JSON-able dict run by :func:`sparsebench.bench.speed.measure_case`. Bad arguments
are rejected by :func:`validate_case` before anything is measured or recorded (the harness
and the ``speed`` command both call it), so a typo never becomes an error record.

``execute`` suite (the default): ``method`` (a registered method or a key of :data:`DENSE`),
``params`` (the method's parameters), ``n``, ``heads``, ``dim``, ``device``, ``normalizer``,
``alpha``, ``path``, ``block_size``, ``repeats``, ``warmup``, ``seed``, ``measure``.
``gold`` suite (``"suite": "gold"``, see :func:`gold_case`): ``impl`` (one of
:data:`GOLD_IMPLS`), ``n``, ``heads``, ``dim``, ``repeats``, ``seed``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch

from .kernels import PATHS

__all__ = ["CASE_FIELDS", "DENSE", "GOLD_FIELDS", "GOLD_IMPLS", "gold_case", "validate_case"]

#: Dense baselines of the ``execute`` suite (no graph): name -> description.
DENSE = {
    "sdpa": "torch scaled_dot_product_attention, softmax, no mask",
    "dense_entmax": "exact α-entmax over every pair, row slabs (execute path 'dense', full graph)",
    "entmax15_full": (
        "entmax.entmax15 over the full score matrix of each head (the package, as is; heads one "
        "after another so that n = 8192 fits in memory)"
    ),
    "xformers": "xformers memory_efficient_attention, softmax (CUDA only)",
}

#: Implementations of the ``gold`` suite: the gold graph, and the support of dense ``entmax15``
#: (exact, and with the package's first partial sort of 64).
GOLD_IMPLS = ("gold", "entmax15", "entmax15_k64")

#: The fields an ``execute`` case may have.
CASE_FIELDS = (
    "suite",
    "method",
    "params",
    "n",
    "heads",
    "dim",
    "device",
    "normalizer",
    "alpha",
    "path",
    "block_size",
    "repeats",
    "warmup",
    "seed",
    "measure",
)
#: The fields a ``gold`` case may have.
GOLD_FIELDS = ("suite", "impl", "n", "heads", "dim", "repeats", "seed")

_PATHS = ("auto", *PATHS)


def gold_case(impl: str, n: int, heads: int, dim: int, repeats: int, seed: int = 0) -> dict:
    """A ``gold`` suite case for :func:`~sparsebench.bench.speed.measure_case`."""
    return {
        "suite": "gold",
        "impl": impl,
        "n": n,
        "heads": heads,
        "dim": dim,
        "repeats": repeats,
        "seed": seed,
    }


def _int(case: Mapping[str, Any], name: str, default: int, low: int, why: str = "") -> None:
    value = case.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"speed case: {name} must be an integer >= {low}{why}, got {value!r}")


def _fields(case: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in case:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (fields: {', '.join(known)})"
            raise ValueError(f"speed case: unknown field {key!r}{hint}")


def _device(device: object) -> None:
    if not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"speed case: device must be 'cpu' or 'cuda[:i]', got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"speed case: device {device!r} but CUDA is not available on this machine; "
                "use device 'cpu'"
            )
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(
                f"speed case: no CUDA device {device!r}; this machine has "
                f"{torch.cuda.device_count()} (cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
            )


def _method(case: Mapping[str, Any]) -> None:
    from sparsebench import methods

    name, params = case.get("method"), case.get("params", {})
    if not isinstance(name, str):
        raise ValueError(f"speed case: method must be a method name, got {name!r}")
    if not isinstance(params, Mapping) or not all(isinstance(p, str) for p in params):
        raise ValueError(f"speed case: params must be a dict of parameters, got {params!r}")
    if name in DENSE:
        if params:
            raise ValueError(f"speed case: the dense baseline {name!r} takes no parameters")
        if name == "xformers" and not str(case.get("device", "cpu")).startswith("cuda"):
            raise ValueError(
                "speed case: xformers runs on CUDA only; use device 'cuda' on a machine with a GPU"
            )
        return
    try:
        methods.get(name)
    except methods.UnknownNameError as e:
        raise ValueError(f"speed case: {e} (dense baselines: {', '.join(DENSE)})") from None
    try:
        methods.create(name, **params)
    except ValueError as e:
        raise ValueError(f"speed case: {e}") from None


def validate_case(case: object) -> dict[str, Any]:
    """Check a speed case before anything is measured; returns it unchanged.

    Checks the suite, the field names, positive sizes (``n``, ``heads``, ``repeats``,
    ``block_size``; ``dim >= 2``), the method (registered, or a dense baseline) and its
    parameters, the path and normaliser (``flex`` runs softmax only), α, and the device
    (``cuda`` only where CUDA is available; ``xformers`` only on CUDA).

    Raises:
        ValueError: one line naming the field and what it must be.
    """
    if not isinstance(case, Mapping):
        raise ValueError(f"speed case must be a dict, got {type(case).__name__}")
    suite = case.get("suite", "execute")
    if suite not in ("execute", "gold"):
        raise ValueError(f"speed case: unknown suite {suite!r}; use 'execute' or 'gold'")
    if suite == "gold":
        _fields(case, GOLD_FIELDS)
        if case.get("impl") not in GOLD_IMPLS:
            raise ValueError(
                f"speed case: unknown implementation {case.get('impl')!r}; choose from "
                f"{', '.join(GOLD_IMPLS)}"
            )
        for name in ("n", "heads", "dim", "repeats"):
            if name not in case:
                raise ValueError(f"speed case: a gold case needs {name}")
            _int(case, name, 0, 1)
        _int(case, "seed", 0, 0)
        return dict(case)
    from sparsebench.methods import check_alpha, check_normalizer

    _fields(case, CASE_FIELDS)
    if "n" not in case:
        raise ValueError("speed case: n (the sequence length) is missing")
    _int(case, "n", 0, 1)
    _int(case, "heads", 8, 1)
    _int(case, "dim", 64, 2, " (the input generator needs d >= 2)")
    _int(case, "repeats", 5, 1)
    _int(case, "warmup", 1, 0)
    _int(case, "block_size", 128, 1)
    _int(case, "seed", 0, 0)
    _device(case.get("device", "cpu"))
    try:
        normalizer = check_normalizer(case.get("normalizer", "entmax"))
        check_alpha(case.get("alpha", 1.5))
    except ValueError as e:
        raise ValueError(f"speed case: {e}") from None
    path = case.get("path", "auto")
    if path not in _PATHS:
        raise ValueError(f"speed case: unknown path {path!r}; use {', '.join(_PATHS)}")
    if case.get("measure", "time") not in ("time", "memory"):
        raise ValueError(f"speed case: measure must be 'memory' or absent, got {case['measure']!r}")
    _method(case)
    if path == "flex" and normalizer != "softmax" and case["method"] not in DENSE:
        raise ValueError("speed case: path 'flex' runs softmax only; use normalizer 'softmax'")
    return dict(case)
