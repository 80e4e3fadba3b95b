"""Q/K datasets: the on-disk format, loaders and generators.

``QKData`` holds per-layer queries and keys (and values) of real sequences with their split,
α and causality; ``QKData.save`` / ``QKData.load`` write and read a directory of safetensors
files plus a ``card.json``. ``load(name_or_dir)`` opens a dataset directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from .qkdata import CARD_VERSION, DatasetError, LayerData, QKData, sha256_file
from .synthetic import synthetic

__all__ = [
    "CARD_VERSION",
    "DatasetError",
    "LayerData",
    "QKData",
    "load",
    "sha256_file",
    "synthetic",
]


def load(name_or_dir: str | os.PathLike) -> QKData:
    """Open a dataset by directory path.

    Raises:
        DatasetError: if it is not a valid dataset directory.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        return QKData.load(path)
    raise DatasetError(
        f"no dataset directory {str(name_or_dir)!r}; pass a directory written by QKData.save "
        "(e.g. one made with `sparsebench datasets synthetic DIR`)"
    )
