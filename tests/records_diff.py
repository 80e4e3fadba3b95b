"""Compare the records of two run folders on every field but timings and provenance.

A change meant to make runs faster must leave every figure as it was. This script reads the
records files of two run (or results) folders — ``<dataset>/records.jsonl`` and
``<dataset>/accuracy.jsonl`` — matches records by key and reports every field that differs,
ignoring :data:`IGNORED` (seconds, the date, the git state and package versions)::

    python -m tests.records_diff runs/BEFORE runs/AFTER

It exits 0 when every record present in both folders is equal, 1 otherwise; records present in
one folder only are listed, and make it fail only with ``--strict``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sparsebench.bench.runs import read_records

#: Record fields that may differ between two runs of the same computation.
IGNORED = frozenset(
    "fit_s predict_s total_s date git_sha git_dirty torch entmax cpu threads".split()
)
FILES = ("records.jsonl", "accuracy.jsonl")


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without the fields of :data:`IGNORED`."""
    return {k: v for k, v in record.items() if k not in IGNORED}


def _keyed(path: Path) -> dict[str, dict[str, Any]]:
    if not (path.exists() or path.with_name(path.name + ".gz").exists()):
        return {}
    return {r["key"]: comparable(r) for r in read_records(path)}


def same(x: Any, y: Any, rtol: float = 0.0) -> bool:
    """Equal, or (``rtol > 0``) equal to a relative tolerance in every float, nested included."""
    if rtol and isinstance(x, float) and isinstance(y, float):
        return x == y or (x != x and y != y) or abs(x - y) <= rtol * max(abs(x), abs(y))
    if rtol and isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k], rtol) for k in x)
    if rtol and isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(same(u, w, rtol) for u, w in zip(x, y, strict=True))
    return x == y


def diff_folders(a: Path, b: Path, rtol: float = 0.0) -> tuple[int, list[str], list[str]]:
    """Compare the records of folders ``a`` and ``b`` (floats to ``rtol``, relative).

    Returns:
        How many records both hold, one line per record that differs (its key and fields),
        and one line per record that only one folder holds.
    """
    compared, differ, alone = 0, [], []
    names = sorted({p.parent.name for d in (a, b) for f in FILES for p in d.glob(f"*/{f}")})
    for name in names:
        for f in FILES:
            ra, rb = _keyed(a / name / f), _keyed(b / name / f)
            for key in sorted(ra.keys() ^ rb.keys()):
                alone.append(f"only in {a if key in ra else b}: {key}")
            for key in sorted(ra.keys() & rb.keys()):
                compared += 1
                fields = sorted(
                    k
                    for k in ra[key].keys() | rb[key].keys()
                    if not same(ra[key].get(k), rb[key].get(k), rtol)
                )
                if fields:
                    differ.append(f"{key}: {', '.join(fields)}")
    return compared, differ, alone


def main(argv: list[str] | None = None) -> int:
    """Command line: compare two folders, print the differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="run or results folder")
    parser.add_argument("after", type=Path, help="run or results folder")
    parser.add_argument("--strict", action="store_true", help="fail on records held by one only")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance of floats")
    args = parser.parse_args(argv)
    compared, differ, alone = diff_folders(args.before, args.after, args.rtol)
    for line in differ + alone:
        print(line)  # noqa: T201
    print(  # noqa: T201
        f"{compared} records in both, {len(differ)} differ; {len(alone)} in one folder only"
    )
    return 1 if differ or (args.strict and alone) else 0


if __name__ == "__main__":
    sys.exit(main())
