"""Where sparsebench keeps downloaded text and built datasets."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$SPARSEBENCH_HOME``, else ``$XDG_CACHE_HOME/sparsebench`` or ``~/.cache/sparsebench``."""
    root = os.environ.get("SPARSEBENCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sparsebench"
    )
    return Path(root)
