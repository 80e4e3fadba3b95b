"""sparsebench: attention-sparsity predictors scored against the gold α-entmax graph.

The distribution's import root. Its subpackages are :mod:`sparsebench.methods` (the registry,
graphs and methods), :mod:`sparsebench.datasets` (query/key datasets) and
:mod:`sparsebench.bench` (harnesses, records, the report and the command line);
:mod:`sparsebench.results` reads records into pandas DataFrames. Subpackages are imported on
first use, so ``import sparsebench`` alone stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__", "bench", "datasets", "methods", "results"]

try:
    #: The installed distribution's version (``"unknown"`` when run from an uninstalled tree).
    __version__: str = version("sparsebench")
except PackageNotFoundError:  # pragma: no cover - only outside an installation
    __version__ = "unknown"

_SUBMODULES = frozenset({"bench", "datasets", "methods", "results"})


def __getattr__(name: str):
    """Import a subpackage on first attribute access (``sparsebench.results.load``)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})
