"""Result records: one JSON object per line, with provenance; one writer, honest readers.

A records file (``records.jsonl``, optionally with published records packed beside it as
``records.jsonl.gz``) has one writer at a time: :func:`records_writer` takes a lock file next to
it (``records.jsonl.lock``) for the whole run, and a second writer fails at once with
:class:`RecordsLockedError`. The lock is an OS lock (``flock`` / ``LockFileEx`` through
``filelock``), released by the OS when its holder dies, so a killed run never blocks the next.

Appends are one ``write`` each on an ``O_APPEND`` file, so a killed writer leaves at most a torn
last line, which the next writer cuts (:func:`repair_tail`). Readers (:func:`read_records`)
keep the first record of each key, warn about every record they drop
(:class:`RecordsWarning`), and never merge duplicates.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import platform
import subprocess
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "RecordFile",
    "RecordsError",
    "RecordsLockedError",
    "RecordsWarning",
    "append_record",
    "lock_path",
    "provenance",
    "read_records",
    "records_writer",
    "repair_tail",
]


class RecordsError(ValueError):
    """A records file that cannot be read or written; the message names the file and the fix."""


class RecordsLockedError(RuntimeError):
    """Another run holds the records file's lock (it is writing the file now)."""


class RecordsWarning(UserWarning):
    """Records were dropped while reading a file (duplicated keys, unreadable lines)."""


def _git(*args: str) -> str | None:
    """The output of a git command in the package's checkout (``None`` where git fails)."""
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


@lru_cache(maxsize=1)
def _git_sha() -> str:
    return (_git("rev-parse", "HEAD") or "").strip() or "unknown"


@lru_cache(maxsize=1)
def _git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (the code run is not ``git_sha``'s)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status.strip())


def provenance() -> dict[str, Any]:
    """Git sha, uncommitted changes (``git_dirty``), package versions, device and date of a run."""
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
        "git_dirty": _git_dirty(),
        "sparsebench": ver("sparsebench"),
        "torch": torch.__version__,
        "entmax": ver("entmax"),
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _os_error(path: Path, e: OSError, doing: str, fix: str) -> RecordsError:
    """One line for an OS error on ``path``: what failed, why, and the fix."""
    why = e.strerror or type(e).__name__
    return RecordsError(f"cannot {doing} {path}: {why}; {fix}")


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as a JSON line with a single ``write`` on an ``O_APPEND`` file.

    A process killed mid-way leaves at most a final line without its newline, which
    :func:`read_records` ignores and the next writer cuts. Call it under
    :func:`records_writer` (or through :meth:`RecordFile.add`) so that one run writes the file.

    Raises:
        RecordsError: if the file cannot be written (read-only folder, a folder in its place).
    """
    path = Path(path)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise _os_error(path, e, "append a record to", "choose a writable results folder") from e


def _numeric_fields() -> frozenset[str]:
    """Record fields that must hold a number (or null): the reported metrics."""
    from ..metrics import METRICS

    return frozenset(METRICS)


def _parse(raw: bytes, numeric: frozenset[str]) -> tuple[dict | None, str]:
    """One line as a record, or ``(None, why it is unreadable)``."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e.msg})"
    if not isinstance(rec, dict):
        return None, f"a JSON {type(rec).__name__}, not an object"
    if "key" in rec and not (isinstance(rec["key"], str) and rec["key"]):
        return None, "its 'key' is not a non-empty string"
    for name in sorted(numeric & rec.keys()):
        v = rec[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            return None, f"{name} is not a number: {str(v)[:40]!r}"
    return rec, ""


def _sources(path: Path) -> Iterator[tuple[Path, list[bytes], bool]]:
    """``(file, lines, may_be_torn)`` of the packed file (if any), then of the plain file."""
    packed = path.with_name(path.name + ".gz")
    if packed.exists():
        try:
            data = gzip.decompress(packed.read_bytes())
        except (OSError, EOFError, zlib.error) as e:
            why = "not a gzip file" if isinstance(e, gzip.BadGzipFile) else "truncated or corrupt"
            raise RecordsError(
                f"cannot read records from {packed}: {why}; restore it (e.g. `git checkout` "
                f"it) or move it away"
            ) from e
        yield packed, data.splitlines(keepends=True), False
    if path.exists():
        try:
            data = path.read_bytes()
        except OSError as e:
            raise _os_error(path, e, "read records from", "pass a readable records file") from e
        yield path, data.splitlines(keepends=True), True


def read_records(path: str | os.PathLike, *, keyed: bool | None = None) -> list[dict[str, Any]]:
    """All readable records of a JSON-lines file, the first of each key.

    Records packed with gzip beside it (``records.jsonl.gz``, as published results are kept)
    count as part of the file and come first, so a sweep resumes after them and appends to the
    plain file. What happens to each kind of bad content:

    * a torn last line of the plain file (a writer killed mid-record, or one still writing):
      skipped silently;
    * an unreadable line (not UTF-8, not JSON, a JSON value that is not an object, a ``key``
      that is not a non-empty string, a metric of :data:`~sparsebench.bench.metrics.METRICS`
      that is neither a number nor null, or, in a keyed file, a record without a ``key``):
      skipped; one :class:`RecordsWarning` per file gives their count and the first line;
    * a record whose key repeats an earlier one (in either file): dropped, the first is kept,
      never averaged; one :class:`RecordsWarning` per file gives the count, the first dropped
      line and where the kept record is;
    * a ``.gz`` file that is not gzip or is truncated, or a file that cannot be read (a
      folder, no permission): :class:`RecordsError` naming the file and the fix, since no
      record of it can be trusted.

    Args:
        path: the plain records file (it need not exist).
        keyed: ``True``: every record must have a ``key`` (sweep and accuracy records);
            ``False``: a log of measurements (speed records), each line its own record, none
            deduplicated; ``None``: keyed when any record of the file has a ``key``.

    Returns:
        The records in file order.

    Raises:
        RecordsError: for a packed file that is not gzip, or a file that cannot be read.
    """
    numeric = _numeric_fields()
    parsed: list[tuple[Path, int, dict | None, str]] = []
    for file, lines, may_be_torn in _sources(Path(path)):
        for no, raw in enumerate(lines, start=1):
            if may_be_torn and no == len(lines) and not raw.endswith(b"\n"):
                break
            if raw.strip():
                parsed.append((file, no, *_parse(raw, numeric)))
    if keyed is None:
        keyed = any(rec is not None and "key" in rec for _, _, rec, _ in parsed)
    out: list[dict[str, Any]] = []
    seen: dict[str, tuple[Path, int]] = {}
    bad: dict[Path, list[tuple[int, str]]] = {}
    dups: dict[Path, list[tuple[int, str]]] = {}
    for file, no, rec, why in parsed:
        if rec is not None and keyed and "key" not in rec:
            rec, why = None, "no 'key'"
        if rec is None:
            bad.setdefault(file, []).append((no, why))
        elif keyed and rec["key"] in seen:
            first_file, first_no = seen[rec["key"]]
            kept = f"line {first_no}" if first_file == file else f"{first_file} line {first_no}"
            dups.setdefault(file, []).append((no, f"key {rec['key']!r}, kept from {kept}"))
        else:
            if keyed:
                seen[rec["key"]] = (file, no)
            out.append(rec)
    for file, items in bad.items():
        no, why = items[0]
        warnings.warn(
            f"{file}: skipped {len(items)} unreadable line(s), first at line {no} ({why}); "
            f"fix or delete those lines",
            RecordsWarning,
            stacklevel=2,
        )
    for file, items in dups.items():
        no, what = items[0]
        warnings.warn(
            f"{file}: dropped {len(items)} record(s) whose key was already read, first at line "
            f"{no} ({what}); each key counts once: delete the duplicates or give each run its "
            f"own results folder",
            RecordsWarning,
            stacklevel=2,
        )
    return out


def repair_tail(path: str | os.PathLike) -> None:
    """Cut a torn last line (a writer killed mid-record) so appends start on a fresh line.

    Raises:
        RecordsError: if the file cannot be read or written.
    """
    path = Path(path)
    try:
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return
            f.truncate(data.rfind(b"\n") + 1)
    except OSError as e:
        raise _os_error(path, e, "repair", "choose a writable results folder") from e


class RecordFile:
    """A resumable record file: the keys it already holds, and appends of new records.

    Opening it cuts a torn last line (:func:`repair_tail`) and reads the keys of the complete
    records, so a run skips what is done and never writes a key twice. Open it through
    :func:`records_writer`, which makes this run the file's only writer.

    Attributes:
        path: the JSON-lines file.
        keyed: whether records carry a ``key`` (``False``: a log of measurements, each
            appended as it comes).
        done: keys of the records in it.
    """

    def __init__(self, path: str | os.PathLike, *, keyed: bool = True):
        self.path = Path(path)
        self.keyed = keyed
        repair_tail(self.path)
        recs = read_records(self.path, keyed=True) if keyed else []
        self.done: set[str] = {r["key"] for r in recs}

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def add(self, record: dict[str, Any]) -> bool:
        """Append ``record`` unless its key is already there; returns whether it was written.

        Raises:
            ValueError: if the file is keyed and ``record`` has no ``key``.
            RecordsError: if the file cannot be written.
        """
        if not self.keyed:
            append_record(self.path, record)
            return True
        key = record.get("key")
        if not isinstance(key, str) or not key:
            raise ValueError(f"a record for {self.path} needs a non-empty string 'key'")
        if key in self.done:
            return False
        append_record(self.path, record)
        self.done.add(key)
        return True


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of records file ``path``: ``<name>.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextmanager
def records_writer(
    path: str | os.PathLike, *, keyed: bool = True, timeout: float = 0
) -> Iterator[RecordFile]:
    """Be the only writer of records file ``path`` for the ``with`` block.

    Takes the lock file :func:`lock_path` (creating the folder if needed), then opens the
    file (:class:`RecordFile`: torn tail cut, existing keys read) *inside* the lock, so that
    what an earlier writer appended is seen. The lock is released at the end of the block and,
    by the OS, when the process dies; the (empty) lock file stays, which is harmless.

    Example::

        with records_writer(out) as records:
            for rec in results():
                records.add(rec)

    Args:
        path: the records file.
        keyed: passed to :class:`RecordFile` (``False`` for speed measurements).
        timeout: seconds to wait for another writer to finish (0: fail at once, negative:
            wait as long as it takes).

    Raises:
        RecordsLockedError: if another run holds the lock.
        RecordsError: if the folder or the lock file cannot be created, or the file is corrupt.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    lock = FileLock(lock_path(path), timeout=timeout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise RecordsLockedError(
            f"{path} is locked: another run is writing it; wait for that run to finish "
            f"or choose another results folder"
        ) from None
    except OSError as e:
        raise _os_error(path, e, "lock", "choose a writable results folder") from e
    try:
        yield RecordFile(path, keyed=keyed)
    finally:
        lock.release()
