"""Publish run folders into ``results/``: merge their records by identity, then the leaderboard.

The published ``results/`` change only here. A run's records files (``<dataset>/records.jsonl``,
``<dataset>/accuracy.jsonl``, ``speed/records.jsonl``) are merged into the same files of the
results folder, keyed by their record keys (which name the dataset build and the sparsebench
version). Records of another identity than the published ones of that file are refused unless
``replace`` is set, and then they replace them. Every check runs before anything is written;
each file is written whole through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sparsebench.datasets import DatasetError, check_name

from ..runs import atomic_write, read_records, record_identity
from .leaderboard import write_leaderboard

__all__ = ["RECORD_FILES", "publish"]

#: The records files of a run folder, relative to it; ``*`` is a dataset name.
RECORD_FILES = ("*/records.jsonl", "*/accuracy.jsonl", "speed/records.jsonl")


def _run_files(run: Path) -> dict[str, Path]:
    """The records files of run folder ``run``, by path relative to it.

    Raises:
        ValueError: if ``run`` is not a folder, or a dataset folder or a record's ``dataset``
            field is not a valid dataset name.
    """
    if not run.is_dir():
        raise ValueError(f"{run}: no such run folder; give folders that `sparsebench run` printed")
    files: dict[str, Path] = {}
    for sub in sorted(p for p in run.iterdir() if p.is_dir()):
        for name in ("records.jsonl", "accuracy.jsonl"):
            if not (sub / name).exists() and not (sub / f"{name}.gz").exists():
                continue
            try:
                check_name(sub.name)
            except DatasetError as e:
                raise ValueError(f"{sub}: {e}") from None
            files[f"{sub.name}/{name}"] = sub / name
    return files


def _check_records(rel: str, path: Path, records: list[dict[str, Any]]) -> None:
    """Every record of a dataset's file names that dataset."""
    folder = rel.split("/")[0]
    if folder == "speed":
        return
    for r in records:
        if r.get("dataset") != folder:
            raise ValueError(
                f"{path}: a record names dataset {r.get('dataset')!r} in the folder of "
                f"{folder!r}; these records were not written by a sparsebench run"
            )


def _identity_key(record: dict[str, Any]) -> str:
    """What makes two records the same: the key, or (speed records have none) every field."""
    return record.get("key") or json.dumps(record, sort_keys=True)


def _describe(ids: set[tuple[str, str]]) -> str:
    return "; ".join(f"dataset build {h}, sparsebench {v}" for h, v in sorted(ids))


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    """All of ``records`` as the file ``path`` (gzip-packed when a ``.gz`` is published)."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    packed = path.with_name(path.name + ".gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    if packed.exists():
        atomic_write(packed, gzip.compress(text.encode(), mtime=0))
        # The plain file's records are in the packed one now.
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, text)


def publish(
    runs: Sequence[str | os.PathLike],
    results: str | os.PathLike = "results",
    *,
    replace: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, int]]:
    """Merge the records of run folders into ``results`` and regenerate its leaderboard.

    The checks of every file and the writes stay in this one function, checks first, so that
    a refusal is seen to write nothing.

    Args:
        runs: run folders (or any folders with the layout of ``results/``).
        results: the published results folder.
        replace: when a run's records are of another dataset build or sparsebench version
            than the published records of the same file, replace those instead of refusing.
        log: where the leaderboard's warnings go.

    Returns:
        Per file (relative to ``results``): ``{"added": n, "kept": n, "replaced": n}``.

    Raises:
        ValueError: if a run is missing or the same folder as ``results``, holds no records,
            mixes identities in one file, or (without ``replace``) differs in identity from
            the published records of a file. Nothing is written then.
    """
    results = Path(results)
    incoming: dict[str, list[dict[str, Any]]] = {}
    for run in map(Path, runs):
        if run.resolve() == results.resolve():
            raise ValueError(f"{run}: is the results folder itself; give run folders")
        for rel, path in _run_files(run).items():
            recs = read_records(path)
            _check_records(rel, path, recs)
            incoming.setdefault(rel, []).extend(recs)
    if not any(incoming.values()):
        raise ValueError(f"no records in {', '.join(map(str, runs))}; nothing to publish")

    plan = []
    for rel, recs in sorted(incoming.items()):
        if not recs:
            continue
        target = results / rel
        ids = {record_identity(r) for r in recs}
        if len(ids) > 1:
            raise ValueError(
                f"{rel}: the runs hold records of {len(ids)} identities ({_describe(ids)}); "
                "publish one dataset build and version at a time"
            )
        published = read_records(target)
        pub_ids = {record_identity(r) for r in published}
        swap = bool(published) and pub_ids != ids
        if swap and not replace:
            raise ValueError(
                f"{target}: the published records are of {_describe(pub_ids)}, the run's of "
                f"{_describe(ids)}; rerun on the published build and version, or pass "
                "--replace to replace them"
            )
        plan.append((rel, target, recs, [] if swap else published, len(published) if swap else 0))

    report: dict[str, dict[str, int]] = {}
    for rel, target, recs, kept, replaced in plan:
        have = {_identity_key(r) for r in kept}
        added = []
        for r in recs:
            if _identity_key(r) not in have:
                added.append(r)
                have.add(_identity_key(r))
        _write(target, [*kept, *added])
        report[rel] = {"added": len(added), "kept": len(kept), "replaced": replaced}
    write_leaderboard(results, log=log)
    return report
