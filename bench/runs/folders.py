"""Run folders: where one run of ``run``, ``sweep``, ``accuracy`` or ``speed`` writes.

A run folder holds ``run.json`` (the command line, start time, sparsebench version and git sha)
and the layout of ``results/``: ``<dataset>/records.jsonl``, ``<dataset>/accuracy.jsonl``,
``speed/records.jsonl`` and the leaderboard files ``sparsebench run`` writes there. By default
each run gets a new folder ``runs/<UTC yyyymmdd-HHMMSS>-<command>`` under the current
directory; the published ``results/`` change only through ``sparsebench publish``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["RUN_FILE", "atomic_write", "is_run_folder", "open_run_folder", "read_run"]

#: The file that marks a folder as a run folder.
RUN_FILE = "run.json"


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    Readers see the old file or the new one, never half of one; the temporary file is
    removed when the write fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run folder (holds ``run.json``)."""
    return (Path(path) / RUN_FILE).is_file()


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """The ``run.json`` of a run folder.

    Raises:
        ValueError: if it is missing or not a JSON object.
    """
    file = Path(path) / RUN_FILE
    try:
        run = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{file}: not a readable run description ({e})") from None
    if not isinstance(run, dict):
        raise ValueError(f"{file}: not a run description (a JSON object)")
    return run


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _invocation(argv: Sequence[str]) -> dict[str, Any]:
    from .records import provenance

    prov = provenance()
    return {
        "command": ["sparsebench", *argv],
        "started": _now().isoformat(timespec="seconds"),
        "sparsebench": prov["sparsebench"],
        "git_sha": prov["git_sha"],
    }


def _note_resume(path: Path, argv: Sequence[str]) -> None:
    """Add this invocation to the ``resumed`` list of an existing run folder's ``run.json``."""
    run = read_run(path)
    run.setdefault("resumed", []).append(_invocation(argv))
    atomic_write(path / RUN_FILE, json.dumps(run, indent=2) + "\n")


def _start(path: Path, argv: Sequence[str]) -> None:
    atomic_write(path / RUN_FILE, json.dumps(_invocation(argv), indent=2) + "\n")


def open_run_folder(
    command: str,
    argv: Sequence[str] = (),
    *,
    results: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    base: str | os.PathLike = ".",
) -> Path:
    """The run folder of this invocation, created (or noted as resumed); an absolute path.

    Args:
        command: the subcommand (``run``, ``sweep``, ``accuracy``, ``speed``).
        argv: the command line after ``sparsebench``, kept in ``run.json``.
        results: ``--results DIR``: a new or empty folder (it becomes a run folder) or an
            existing run folder (continued).
        resume: ``--resume DIR``: an existing run folder, continued.
        base: where the default ``runs/`` folder is made.

    Raises:
        ValueError: when both are given, ``resume`` is not a run folder, or ``results`` is a
            file or a folder with other content (such as the published ``results/``).
    """
    if results is not None and resume is not None:
        raise ValueError("give --results or --resume, not both")
    if resume is not None:
        path = Path(resume)
        if not is_run_folder(path):
            raise ValueError(
                f"--resume {resume}: not a run folder (no {RUN_FILE}); give the folder a "
                "previous run printed"
            )
        _note_resume(path, argv)
        return path.resolve()
    if results is not None:
        path = Path(results)
        if path.exists() and not path.is_dir():
            raise ValueError(f"--results {results}: is a file; give a folder")
        if is_run_folder(path):
            _note_resume(path, argv)
            return path.resolve()
        # Another run starting into the same new folder may be writing run.json right now.
        others = (
            [p for p in path.iterdir() if not p.name.startswith(f".{RUN_FILE}")]
            if (path.is_dir())
            else []
        )
        if others:
            raise ValueError(
                f"--results {results}: the folder holds files and is not a run folder (no "
                f"{RUN_FILE}); choose a new folder, and `sparsebench publish` a run to update "
                "published results"
            )
        path.mkdir(parents=True, exist_ok=True)
        _start(path, argv)
        return path.resolve()
    runs = Path(base) / "runs"
    stem = f"{_now():%Y%m%d-%H%M%S}-{command}"
    for i in range(1, 1000):
        path = runs / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        _start(path, argv)
        return path.resolve()
    raise RuntimeError(f"{runs}: could not make a new run folder {stem}-N; clean up {runs}")
