"""The body of ``sparsebench speed``: measure cases across lengths, append records, print a table.

Two suites: ``execute`` (predict + layout + sparse attention per method spec, against the dense
baselines) and ``gold`` (the gold graph against dense entmax). Each case runs in a fresh
process (:mod:`sparsebench.bench.speed`), and each record is appended as soon as it is measured.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .commands import CLIError, text_table

__all__ = ["DEFAULT_SPECS", "cmd_speed", "speed_specs"]

#: The ``execute`` suite's cases when ``--methods`` is not given.
DEFAULT_SPECS = "sdpa;dense_entmax;window:w=65,global_tokens=2;sparsefinder_kmeans:num_clusters=16"


def cmd_speed(args) -> int:
    """Wall-clock and peak memory across lengths, each case in a fresh process."""
    from sparsebench.bench.runs import provenance

    lengths = [int(x) for x in args.lengths.split(",")]
    prov = provenance()
    out = Path(args.out) if args.out else Path(args.results) / "speed" / "records.jsonl"
    if args.suite == "gold":
        rows, cols = _gold_suite(args, lengths, prov, out)
    else:
        rows, cols = _execute_suite(args, lengths, prov, out)
    print(text_table(rows, cols))
    dev = f"{prov['device']} ({prov['cpu']})"
    print(f"device: {dev}, {prov['threads']} threads, torch {prov['torch']}")
    print(f"records appended to {out}")
    return 0


def speed_specs(methods: str | None) -> list[tuple[str, str, dict[str, Any]]]:
    """``--methods`` of the execute suite as ``(spec, name, params)``, parsed up front.

    Specs are separated by ``;``; an item without ``:`` may also list several names separated
    by ``,``. Dense baselines (``sdpa``, ``dense_entmax``, ...) take no parameters.
    """
    from sparsebench.bench import DENSE
    from sparsebench.methods import parse_spec

    specs = (methods or DEFAULT_SPECS).split(";")
    specs = [x for spec in specs for x in ([spec] if ":" in spec else spec.split(","))]
    out = []
    for spec in specs:
        name = spec.partition(":")[0]
        out.append((spec, name, {}) if name in DENSE else (spec, *parse_spec(spec)))
    return out


def _gold_suite(args, lengths: list[int], prov: dict, out: Path) -> tuple[list[dict], list[str]]:
    """The gold graph against dense entmax: one record per (implementation, n)."""
    from sparsebench.bench import GOLD_IMPLS, gold_case, measure_case
    from sparsebench.bench.runs import append_record

    impls = args.methods.split(",") if args.methods else ["gold", "entmax15"]
    for impl in impls:
        if impl not in GOLD_IMPLS:
            raise CLIError(f"unknown implementation {impl!r}; choose from {', '.join(GOLD_IMPLS)}")
    rows: list[dict] = []
    for n in lengths:
        for impl in impls:
            if impl != "gold" and n > args.max_dense:
                rows.append({"impl": impl, "n": n, "note": f"skipped (n > {args.max_dense})"})
                continue
            print(f"measuring {impl} n={n} ...", file=sys.stderr, flush=True)
            rec = measure_case(gold_case(impl, n, args.heads, args.dim, args.repeats))
            rec.update({"suite": "gold", **prov})
            rows.append(rec)
            append_record(out, rec)
    base = {
        r["n"]: r["time_min_s"] for r in rows if r.get("impl") == "entmax15" and "time_min_s" in r
    }
    for r in rows:
        if "time_min_s" in r and r["n"] in base:
            r["speedup_vs_entmax15"] = base[r["n"]] / r["time_min_s"]
    cols = ["impl", "n", "time_min_s", "time_median_s", "peak_extra_mb", "speedup_vs_entmax15"]
    return rows, [*cols, "note"]


def _execute_suite(args, lengths: list[int], prov: dict, out: Path) -> tuple[list[dict], list[str]]:
    """Predict + layout + kernel per method spec and n, with the ratio to the dense baseline."""
    from sparsebench.bench import measure_case
    from sparsebench.bench.runs import append_record

    specs = speed_specs(args.methods)
    rows: list[dict] = []
    for n in lengths:
        for spec, name, params in specs:
            if name == "entmax15_full" and n > args.max_dense:
                continue
            case = {
                "method": name,
                "params": params,
                "n": n,
                "heads": args.heads,
                "dim": args.dim,
                "device": args.device,
                "normalizer": args.normalizer,
                "path": args.path,
                "block_size": args.block_size,
                "repeats": args.repeats,
            }
            print(f"measuring {spec} n={n} ...", file=sys.stderr, flush=True)
            rec = measure_case(case)
            rec.update({"suite": "execute", "spec": spec, **prov})
            append_record(out, rec)
            flat = {"spec": spec, "n": n, "error": rec.get("error", "")}
            for part in ("predict", "layout", "kernel", "end_to_end"):
                if part in rec:
                    flat[f"{part}_s"] = rec[part]["median_s"]
            flat["peak_mb"] = rec.get("peak_mb")
            flat["sparsity"] = rec.get("sparsity")
            flat["block_density"] = rec.get("block_density")
            rows.append(flat)
    dense = "sdpa" if args.normalizer == "softmax" else "dense_entmax"
    base = {r["n"]: r["end_to_end_s"] for r in rows if r["spec"] == dense and "end_to_end_s" in r}
    for r in rows:
        if "end_to_end_s" in r and r["n"] in base:
            r[f"x_{dense}"] = r["end_to_end_s"] / base[r["n"]]
    cols = ["spec", "n", "predict_s", "layout_s", "kernel_s", "end_to_end_s", f"x_{dense}"]
    return rows, [*cols, "peak_mb", "sparsity", "block_density", "error"]
