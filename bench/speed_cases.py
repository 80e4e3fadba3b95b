"""What a speed case is: its fields, the dense baselines, the checks, what its method fits on.

A case is a JSON-able dict run by :func:`sparsebench.bench.speed.measure_case`. Bad arguments
are rejected by :func:`validate_case` before anything is measured or recorded (the harness
and the ``speed`` command both call it), so a typo never becomes an error record.

``execute`` suite (the default): ``method`` (a registered method or a key of :data:`DENSE`),
``params`` (the method's parameters), ``n``, ``heads``, ``dim``, ``device``, ``dtype``
(``float32``, ``bfloat16`` or ``float16`` inputs), ``causal``, ``normalizer``, ``alpha``,
``path``, ``block_size``, ``repeats``, ``warmup``, ``seed``, ``measure``, ``fit_data`` (a
dataset name or folder whose train split, layer 0, fits a method with a fit step:
:func:`fit_split`; else seeded synthetic sequences of ``min(n, 512)`` tokens) and
``fit_cache`` (a folder keeping fitted methods for later processes: :func:`fitted_method`).
``gold`` suite (``"suite": "gold"``, see :func:`gold_case`): ``impl`` (one of
:data:`GOLD_IMPLS`), ``n``, ``heads``, ``dim``, ``repeats``, ``seed``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .kernels import PATHS

__all__ = [
    "CASE_FIELDS",
    "CUDA_ONLY",
    "DENSE",
    "DENSE_ENTMAX",
    "DENSE_SOFTMAX",
    "DTYPES",
    "GOLD_FIELDS",
    "GOLD_IMPLS",
    "baseline_normalizer",
    "fit_split",
    "fitted_method",
    "gold_case",
    "validate_case",
]

#: Dense baselines of the ``execute`` suite (no graph): name -> description.
DENSE = {
    "sdpa": "torch scaled_dot_product_attention, softmax, no mask, the backend torch picks",
    "sdpa_flash": "scaled_dot_product_attention pinned to the FLASH backend (CUDA, half only)",
    "sdpa_efficient": "scaled_dot_product_attention pinned to the memory-efficient backend (CUDA)",
    "xformers": "xformers memory_efficient_attention, softmax (CUDA only)",
    "dense_entmax": "exact α-entmax over every pair, row slabs (execute path 'dense', full graph)",
    "entmax15_full": (
        "entmax.entmax15 over the full score matrix of each head (the package, as is; heads one "
        "after another so that n = 8192 fits in memory; scores in float32)"
    ),
    "entmax_bisect_full": (
        "entmax.entmax_bisect (any α) over the full score matrix of each head, float32 scores"
    ),
    "adasplash": (
        "adasplash.adasplash, the package's dispatcher: causal α = 1.5 runs AdaSplash-2 "
        "(adasplash_v2), anything else the block-mask kernel (CUDA only)"
    ),
    "adasplash_block_mask": "adasplash.adasplash_v1, the AdaSplash block-mask kernel (CUDA only)",
    "adasplash_no_block_mask": "adasplash.adasplash_no_block_mask (CUDA only)",
}
#: Dense softmax baselines; the speed tables compare softmax cases with the best of them.
DENSE_SOFTMAX = ("sdpa", "sdpa_flash", "sdpa_efficient", "xformers")
#: Dense α-entmax baselines (AdaSplash picks its own blocks from the exact threshold).
DENSE_ENTMAX = (
    "dense_entmax",
    "entmax15_full",
    "entmax_bisect_full",
    "adasplash",
    "adasplash_block_mask",
    "adasplash_no_block_mask",
)
#: Dense baselines that run on CUDA only, with the package each needs (``None``: torch).
CUDA_ONLY: dict[str, str | None] = {
    "sdpa_flash": None,
    "sdpa_efficient": None,
    "xformers": "xformers",
    "adasplash": "adasplash",
    "adasplash_block_mask": "adasplash",
    "adasplash_no_block_mask": "adasplash",
}
#: Input dtypes a case may ask for.
DTYPES = ("float32", "bfloat16", "float16")

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
    "dtype",
    "causal",
    "normalizer",
    "alpha",
    "path",
    "block_size",
    "repeats",
    "warmup",
    "seed",
    "measure",
    "fit_data",
    "fit_cache",
)
#: The fields a ``gold`` case may have.
GOLD_FIELDS = ("suite", "impl", "n", "heads", "dim", "repeats", "seed")

_PATHS = ("auto", *PATHS)
#: AdaSplash's kernels take these head dimensions only.
_ADASPLASH_DIMS = (16, 32, 64, 128, 256)


def baseline_normalizer(name: str) -> str:
    """The normaliser a dense baseline computes (``softmax`` or ``entmax``)."""
    return "softmax" if name in DENSE_SOFTMAX else "entmax"


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


def _baseline(case: Mapping[str, Any], name: str) -> None:
    """The checks of a dense baseline: CUDA, its package, dtype, head size and α it supports."""
    if case.get("params", {}):
        raise ValueError(f"speed case: the dense baseline {name!r} takes no parameters")
    on_cuda = str(case.get("device", "cpu")).startswith("cuda")
    if name in CUDA_ONLY and not on_cuda:
        raise ValueError(
            f"speed case: {name} runs on CUDA only; use device 'cuda' on a machine with a GPU"
        )
    package = CUDA_ONLY.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ValueError(
            f"speed case: {name} needs the {package} package; install the extra: "
            "pip install 'sparsebench[gpu]' (with your torch pinned)"
        )
    if name == "sdpa_flash" and case.get("dtype", "float32") == "float32":
        raise ValueError(
            "speed case: sdpa_flash needs dtype bfloat16 or float16 (the flash kernel has no "
            "float32); use sdpa_efficient for float32"
        )
    if name == "entmax15_full" and case.get("alpha", 1.5) != 1.5:
        raise ValueError(
            "speed case: entmax15_full is α = 1.5 only; use entmax_bisect_full for other α"
        )
    if name.startswith("adasplash"):
        if case.get("dim", 64) not in _ADASPLASH_DIMS:
            raise ValueError(
                f"speed case: {name} needs dim in {_ADASPLASH_DIMS}, got {case.get('dim', 64)}"
            )
        if not 1 < case.get("alpha", 1.5) <= 2:
            raise ValueError(f"speed case: {name} supports 1 < alpha <= 2, got {case['alpha']}")


def _method(case: Mapping[str, Any]) -> None:
    from sparsebench import methods

    name, params = case.get("method"), case.get("params", {})
    if not isinstance(name, str):
        raise ValueError(f"speed case: method must be a method name, got {name!r}")
    if not isinstance(params, Mapping) or not all(isinstance(p, str) for p in params):
        raise ValueError(f"speed case: params must be a dict of parameters, got {params!r}")
    if name in DENSE:
        _baseline(case, name)
        return
    try:
        methods.get(name)
    except methods.UnknownNameError as e:
        raise ValueError(f"speed case: {e} (dense baselines: {', '.join(DENSE)})") from None
    try:
        methods.create(name, **params)
    except ValueError as e:
        raise ValueError(f"speed case: {e}") from None


def _gold(case: Mapping[str, Any]) -> dict[str, Any]:
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


def validate_case(case: object) -> dict[str, Any]:
    """Check a speed case before anything is measured; returns it unchanged.

    Checks the suite, the field names, positive sizes (``n``, ``heads``, ``repeats``,
    ``block_size``; ``dim >= 2``), the dtype and ``causal``, the method (registered, or a dense
    baseline, with what the baseline needs: CUDA, its package, a half dtype for flash, a head
    size and α for AdaSplash) and its parameters, the path and normaliser (``flex`` runs
    softmax only, ``flex_entmax`` α-entmax only), α, and the device (``cuda`` only where CUDA
    is available).

    Raises:
        ValueError: one line naming the field and what it must be.
    """
    if not isinstance(case, Mapping):
        raise ValueError(f"speed case must be a dict, got {type(case).__name__}")
    suite = case.get("suite", "execute")
    if suite not in ("execute", "gold"):
        raise ValueError(f"speed case: unknown suite {suite!r}; use 'execute' or 'gold'")
    if suite == "gold":
        return _gold(case)
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
    if case.get("dtype", "float32") not in DTYPES:
        raise ValueError(f"speed case: dtype must be one of {DTYPES}, got {case['dtype']!r}")
    if not isinstance(case.get("causal", False), bool):
        raise ValueError(f"speed case: causal must be true or false, got {case['causal']!r}")
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
    for name in ("fit_data", "fit_cache"):
        if name in case and (not isinstance(case[name], str) or not case[name]):
            raise ValueError(
                f"speed case: {name} must be a dataset name or folder, got {case[name]!r}"
            )
    _method(case)
    if case["method"] not in DENSE:
        if path == "flex" and normalizer != "softmax":
            raise ValueError(
                "speed case: path 'flex' runs softmax only; use normalizer 'softmax', or path "
                "'flex_entmax' for α-entmax"
            )
        if path == "flex_entmax" and normalizer != "entmax":
            raise ValueError(
                "speed case: path 'flex_entmax' runs α-entmax only; use normalizer 'entmax', "
                "or path 'flex' for softmax"
            )
    return dict(case)


# -- what a method is fitted on -------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def fit_split(name: str, heads: int, dim: int) -> tuple[Any, str]:
    """Layer 0 of dataset ``name``'s train split, with ``heads`` heads, and what it is.

    A dataset with fewer heads than ``heads`` has its heads repeated in turn (head ``h`` is the
    dataset's head ``h mod H``), so that a per-head fit covers every head of the case.

    Returns:
        The split (a one-layer ``QKData``) and the text of the records' ``fit_on`` field.

    Raises:
        ValueError: when the dataset's head dimension is not ``dim``.
    """
    from sparsebench.datasets import QKData, load

    data = load(name, log=lambda _: None).split("train")
    if data.head_dim != dim:
        raise ValueError(
            f"speed case: fit_data {name!r} has head dimension {data.head_dim}, the case has "
            f"dim {dim}; use dim {data.head_dim} or another fit_data"
        )
    pick = torch.arange(heads) % data.num_heads
    q, k = (t[:, :1, pick].contiguous() for t in (data.q, data.k))  # (S, 1, heads, n, d)
    train = QKData(
        q=q, k=k, lengths=data.lengths, causal=data.causal, alpha=data.alpha, meta=data.meta
    )
    lo, hi = int(data.lengths.min()), int(data.lengths.max())
    about = (
        f"{data.meta.get('name', name)} train split, layer 0: {len(data)} sequences of {lo}-{hi} "
        f"tokens, {data.num_heads} heads"
        + (f" repeated to {heads}" if heads != data.num_heads else "")
        + "; one fit applied at every n"
    )
    return train, about


#: Fitted methods of this process: (method, fit seconds, what it was fitted on), by case key.
_FITTED: dict[str, tuple[Any, float, str]] = {}


def _train(case: Mapping[str, Any]) -> tuple[Any, str]:
    """The training split of a case's method and what it is (``fit_data`` or synthetic)."""
    heads, dim = case.get("heads", 8), case.get("dim", 64)
    if case.get("fit_data"):
        return fit_split(case["fit_data"], heads, dim)
    from sparsebench.datasets import synthetic

    size = min(case["n"], 512)
    data = synthetic(num_seqs=8, layers=1, heads=heads, n=size, d=dim, seed=1)
    return data.split("train"), f"synthetic: seeded sequences of {size} tokens"


def fitted_method(case: Mapping[str, Any]) -> tuple[Any, float, str]:
    """The case's method, fitted once per process and, with ``fit_cache``, once per folder.

    The fitted method is kept in ``fit_cache`` under a hash of what the fit depends on
    (method, parameters, heads, dim, and ``fit_data`` or the synthetic length), written
    atomically, and loaded by every later process that asks for the same fit.

    Returns:
        The fitted method, its fit's seconds, and what it was fitted on.
    """
    from sparsebench import methods

    data = case.get("fit_data") or min(case["n"], 512)
    parts = [case["method"], case.get("params", {}), case.get("heads", 8), case.get("dim", 64)]
    key = json.dumps([*parts, data], sort_keys=True)
    if key in _FITTED:
        return _FITTED[key]
    cache = case.get("fit_cache")
    file = Path(cache) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt" if cache else None
    if file is not None and file.exists():
        _FITTED[key] = tuple(torch.load(file, weights_only=False))
        return _FITTED[key]
    train, about = _train(case)
    m = methods.create(case["method"], **case.get("params", {})).for_data(train)
    t0 = time.perf_counter()
    _FITTED[key] = (m.fit(train, 0), time.perf_counter() - t0, about)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}")
        torch.save(_FITTED[key], tmp)
        os.replace(tmp, file)
    return _FITTED[key]
