"""Q/K datasets: the on-disk format, the bundled datasets, loaders and generators.

``QKData`` holds per-layer queries and keys (and values) of real sequences with their split,
α and causality; ``QKData.save`` / ``QKData.load`` write and read a directory of safetensors
files plus a ``card.json``. ``load(name_or_dir)`` opens a dataset directory, or a named dataset
from the cache, building it on first use. ``DATASETS`` lists the named datasets as
:class:`DatasetSpec` records: description, builder, and the task and model that
``sparsebench accuracy`` scores.

Dataset names are checked with :func:`check_name` before they become paths; writers replace only
an earlier dataset (see :mod:`.store`), and a named dataset is built in the cache by one process
at a time (a file lock beside it), so a second one waits and then finds it built.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_root
from .card import CARD_VERSION, DatasetError, check_name, name_from
from .minilm import MINILM_MODEL
from .qkdata import LayerData, QKData, content_hash, sha256_file
from .store import build_lock, check_target, clean_stale
from .synthetic import synthetic

__all__ = [
    "CARD_VERSION",
    "DATASETS",
    "DatasetError",
    "DatasetSpec",
    "LayerData",
    "QKData",
    "build",
    "check_name",
    "content_hash",
    "dataset_dir",
    "dataset_spec",
    "load",
    "name_from",
    "sha256_file",
    "synthetic",
]

#: ``builder(out_dir, log) -> path``: writes a dataset directory.
Builder = Callable[[Path, Callable[[str], None]], Path]


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: what it is, how it is built, and what its model is scored on.

    Attributes:
        name: the name :func:`load` and :func:`build` take.
        description: one line for listings.
        builder: ``builder(out_dir, log) -> path`` writes the dataset directory.
        task: what ``sparsebench accuracy`` scores on the model the data comes from
            (``"next-token"``, ``"masked-token"``, ``"embedding-fidelity"``), or ``None`` when
            there is no model to score.
        model: the model the data is extracted from (a bundled model name or a hub name), or
            ``None``.
    """

    name: str
    description: str
    builder: Builder
    task: str | None = None
    model: str | None = None


def _bundled(name: str) -> Builder:
    def builder(out: Path, log: Callable[[str], None]) -> Path:
        from .shakespeare import build as build_bundled

        return build_bundled(name, out, log=log)

    return builder


def _synthetic(causal: bool) -> Builder:
    def builder(out: Path, log: Callable[[str], None]) -> Path:
        return synthetic(causal=causal, seed=0).save(out)

    return builder


def _minilm(out: Path, log: Callable[[str], None]) -> Path:
    from .minilm import build_minilm_entmax

    return build_minilm_entmax(out)


def _minilm_ft(out: Path, log: Callable[[str], None]) -> Path:
    from .minilm_ft import build_minilm_entmax_ft

    return build_minilm_entmax_ft(out)


#: Named datasets by name.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "shakespeare-lm",
            "causal entmax LM on Shakespeare (bundled model)",
            _bundled("shakespeare-lm"),
            task="next-token",
            model="shakespeare-lm",
        ),
        DatasetSpec(
            "shakespeare-mlm",
            "entmax masked-LM encoder on Shakespeare (bundled model)",
            _bundled("shakespeare-mlm"),
            task="masked-token",
            model="shakespeare-mlm",
        ),
        DatasetSpec(
            "minilm-entmax",
            "all-MiniLM-L6-v2 with entmax attention (extra `hf`)",
            _minilm,
            task="embedding-fidelity",
            model=MINILM_MODEL,
        ),
        DatasetSpec(
            "synthetic-bidir", "small synthetic data for tests and examples", _synthetic(False)
        ),
        DatasetSpec(
            "synthetic-causal",
            "small synthetic causal data for tests and examples",
            _synthetic(True),
        ),
        DatasetSpec(
            "minilm-entmax-ft",
            "all-MiniLM-L6-v2, q/k fine-tuned for entmax (extra `hf`)",
            _minilm_ft,
            task="embedding-fidelity",
            model=MINILM_MODEL,
        ),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    """The :data:`DATASETS` entry of ``name``.

    Raises:
        DatasetError: for an invalid or unknown name (with the closest known one).
    """
    check_name(name)
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(DATASETS)}"
        raise DatasetError(f"unknown dataset {name!r}{hint}")
    return DATASETS[name]


def dataset_dir(name: str) -> Path:
    """Cache directory of a named dataset (``$SPARSEBENCH_HOME/datasets/<name>``).

    Raises:
        DatasetError: if ``name`` is not a valid dataset name (:func:`check_name`).
    """
    return cache_root() / "datasets" / check_name(name)


def _lock_path(name: str) -> Path:
    return cache_root() / "datasets" / f".{check_name(name)}.lock"


def build(
    name: str, out: str | os.PathLike | None = None, log: Callable[[str], None] = print
) -> Path:
    """Build a named dataset into ``out`` (default: its cache directory, under a file lock).

    Raises:
        DatasetError: for an invalid or unknown name, or an ``out`` that exists and is not a
            sparsebench dataset (checked before building; nothing is written or deleted).
    """
    spec = dataset_spec(name)
    path = Path(out) if out is not None else dataset_dir(name)
    check_target(path)
    if out is not None:
        log(f"building {name} into {path}")
        return spec.builder(path, log)
    with build_lock(_lock_path(name), name, log):
        log(f"building {name} into {path}")
        return spec.builder(path, log)


def load(name_or_dir: str | os.PathLike, *, log: Callable[[str], None] = print) -> QKData:
    """Open a dataset directory, or a named dataset (built into the cache on first use).

    A named dataset missing from the cache is built under the cache's file lock; a process
    that finds the lock held waits, then loads what the other one built. Temporaries that a
    killed build left in the cache are removed first.

    Raises:
        DatasetError: if it is neither a dataset directory nor a known name.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        return QKData.load(path)
    name = str(name_or_dir)
    if name in DATASETS:
        cached = dataset_dir(name)
        clean_stale(cached, log)  # what a killed build left; restores a dataset moved aside
        if not (cached / "card.json").exists():
            with build_lock(_lock_path(name), name, log):
                if not (cached / "card.json").exists():
                    check_target(cached)
                    log(f"building {name} into {cached}")
                    DATASETS[name].builder(cached, log)
        return QKData.load(cached)
    if "/" in name or "\\" in name or name.startswith(".") or path.is_absolute():
        raise DatasetError(
            f"no dataset directory {name!r}; pass a directory written by QKData.save or a "
            f"dataset name ({', '.join(DATASETS)})"
        )
    dataset_spec(name)  # raises for an invalid name, or with a suggestion
    raise AssertionError("unreachable")
