"""Q/K datasets: the on-disk format, the bundled datasets, loaders and generators.

``QKData`` holds per-layer queries and keys (and values) of real sequences with their split,
α and causality; ``QKData.save`` / ``QKData.load`` write and read a directory of safetensors
files plus a ``card.json``. ``load(name_or_dir)`` opens a dataset directory, or a named dataset
from the cache, building it on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .cache import cache_root
from .qkdata import CARD_VERSION, DatasetError, LayerData, QKData, sha256_file
from .synthetic import synthetic

__all__ = [
    "CARD_VERSION",
    "DATASETS",
    "DatasetError",
    "LayerData",
    "QKData",
    "build",
    "dataset_dir",
    "load",
    "sha256_file",
    "synthetic",
]


def _bundled(name: str) -> Callable[[Path, Callable[[str], None]], Path]:
    def builder(out: Path, log: Callable[[str], None]) -> Path:
        from .shakespeare import build as build_bundled

        return build_bundled(name, out, log=log)

    return builder


def _synthetic(causal: bool) -> Callable[[Path, Callable[[str], None]], Path]:
    def builder(out: Path, log: Callable[[str], None]) -> Path:
        return synthetic(causal=causal, seed=0).save(out)

    return builder


def _minilm(out: Path, log: Callable[[str], None]) -> Path:
    from .hf import build_minilm_entmax

    return build_minilm_entmax(out)


#: Named datasets: name -> (description, builder(out_dir, log) -> path).
DATASETS: dict[str, tuple[str, Callable[[Path, Callable[[str], None]], Path]]] = {
    "shakespeare-lm": (
        "causal entmax LM on Shakespeare (bundled model)",
        _bundled("shakespeare-lm"),
    ),
    "shakespeare-mlm": (
        "entmax masked-LM encoder on Shakespeare (bundled model)",
        _bundled("shakespeare-mlm"),
    ),
    "minilm-entmax": ("all-MiniLM-L6-v2 with entmax attention (extra `hf`)", _minilm),
    "synthetic-bidir": ("small synthetic data for tests and examples", _synthetic(False)),
    "synthetic-causal": ("small synthetic causal data for tests and examples", _synthetic(True)),
}


def dataset_dir(name: str) -> Path:
    """Cache directory of a named dataset (``$SPARSEBENCH_HOME/datasets/<name>``)."""
    return cache_root() / "datasets" / name


def build(
    name: str, out: str | os.PathLike | None = None, log: Callable[[str], None] = print
) -> Path:
    """Build a named dataset into ``out`` (default: its cache directory)."""
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(DATASETS)}"
        raise DatasetError(f"unknown dataset {name!r}{hint}")
    path = Path(out) if out is not None else dataset_dir(name)
    log(f"building {name} into {path}")
    return DATASETS[name][1](path, log)


def load(name_or_dir: str | os.PathLike, *, log: Callable[[str], None] = print) -> QKData:
    """Open a dataset directory, or a named dataset (built into the cache on first use).

    Raises:
        DatasetError: if it is neither a dataset directory nor a known name.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        return QKData.load(path)
    name = str(name_or_dir)
    if name in DATASETS:
        cached = dataset_dir(name)
        if not (cached / "card.json").exists():
            build(name, cached, log)
        return QKData.load(cached)
    if os.sep in name or name.startswith("."):
        raise DatasetError(
            f"no dataset directory {name!r}; pass a directory written by QKData.save or a "
            f"dataset name ({', '.join(DATASETS)})"
        )
    build(name)  # raises with a suggestion
    raise AssertionError("unreachable")
