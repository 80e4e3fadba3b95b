"""Result records: one JSON object per line, with provenance, appended atomically."""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["RecordFile", "append_record", "provenance", "read_records", "repair_tail"]


@lru_cache(maxsize=1)
def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, Any]:
    """Git sha, package versions, device and date of this run."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    return {
        "git_sha": _git_sha(),
        "sparsebench": ver("sparsebench"),
        "torch": torch.__version__,
        "entmax": ver("entmax"),
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as a JSON line with a single ``write`` on an ``O_APPEND`` file.

    A process killed mid-way leaves at most a final line without its newline, which
    :func:`read_records` ignores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a JSON-lines file (a torn last line is skipped).

    Records packed with gzip beside it (``records.jsonl.gz``, as published results are kept)
    count as part of the file and come first, so a sweep resumes after them and appends to
    the plain file.
    """
    path = Path(path)
    packed = path.with_name(path.name + ".gz")
    text = gzip.decompress(packed.read_bytes()).decode() if packed.exists() else ""
    if path.exists():
        text += path.read_text()
    out = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def repair_tail(path: str | os.PathLike) -> None:
    """Cut a torn last line (a writer killed mid-record) so appends start on a fresh line."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


class RecordFile:
    """A resumable record file: the keys it already holds, and appends of new records.

    Opening it cuts a torn last line (:func:`repair_tail`) and reads the keys of the complete
    records, so a run skips what is done and never writes a key twice.

    Attributes:
        path: the JSON-lines file.
        done: keys of the records in it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        repair_tail(self.path)
        self.done = {r.get("key") for r in read_records(self.path)}

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def add(self, record: dict[str, Any]) -> bool:
        """Append ``record`` unless its key is already there; returns whether it was written."""
        if record["key"] in self.done:
            return False
        append_record(self.path, record)
        self.done.add(record["key"])
        return True
