"""The body of ``sparsebench speed``: measure cases across lengths, append records, print a table.

Two suites: ``execute`` (predict + layout + sparse attention per method spec, against the dense
baselines) and ``gold`` (the gold graph against dense entmax). Every case is built and checked
before anything is measured or a run folder is made; each then runs in a fresh process
(:mod:`sparsebench.bench.speed`), and each record is appended as soon as it is measured, to
``speed/records.jsonl`` of the run folder (or ``--out``), with one writer at a time. A run in
which every case failed exits with status 1. ``--fit-data NAME`` fits methods that learn on that
dataset's train split (layer 0) instead of synthetic sequences, once per run folder. Two
presets run prepared cases instead: ``--preset gpu`` the GPU benchmark
(:mod:`sparsebench.bench.gpu_bench`), ``--preset methods`` every registered method at its
leaderboard and default configurations (:mod:`sparsebench.bench.methods_bench`).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any

from .commands import CLIError, echo, text_table
from .run_commands import records_out

__all__ = ["DEFAULT_LENGTHS", "DEFAULT_SPECS", "cmd_speed", "speed_specs"]

#: The ``execute`` suite's cases when ``--methods`` is not given.
DEFAULT_SPECS = "sdpa;dense_entmax;window:w=65,global_tokens=2;sparsefinder_kmeans:num_clusters=16"
#: The suites' lengths when ``--lengths`` is not given (the presets have their own).
DEFAULT_LENGTHS = (512, 1024, 2048, 4096)
#: The suites' values of the options a preset sets its own way when they are not given.
_SUITE_DEFAULTS = {"block_size": 128, "normalizer": "entmax"}


def _check_device(device: str) -> None:
    """``cpu``, or ``cuda``/``cuda:N`` on a machine that has that GPU."""
    import torch

    if device == "cpu":
        return
    if device.partition(":")[0] != "cuda":
        raise CLIError(f"--device {device!r}: unknown device; use cpu or cuda")
    if not torch.cuda.is_available():
        raise CLIError(
            f"--device {device}: CUDA is not available on this machine; use --device cpu"
        )
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise CLIError(f"--device {device}: this machine has {torch.cuda.device_count()} GPUs")


def cmd_speed(args) -> int:
    """Wall-clock and peak memory across lengths, each case in a fresh process."""
    from sparsebench.bench.runs import open_run_folder, provenance, records_writer

    preset = getattr(args, "preset", None)
    if preset == "gpu":
        from .gpu_bench import run_preset

        lengths = getattr(args, "lengths", None)  # the GPU preset reads them as text
        text = ",".join(map(str, lengths)) if lengths else None
        return run_preset(argparse.Namespace(**{**vars(args), "lengths": text}))
    if preset == "methods":
        from .methods_bench import run_preset

        _check_device(args.device or "cpu")
        return run_preset(args)
    args = _suite_defaults(args)
    _check_device(args.device)
    build = _gold_cases if args.suite == "gold" else _execute_cases
    cases = build(args)
    if not any(case is not None for _, case in cases):
        raise CLIError("no case to measure: every case is above --max-dense; raise it")
    out = records_out(args)
    folder = None
    if out is None:
        folder = open_run_folder(
            "speed", getattr(args, "argv", ()), results=args.results, resume=args.resume
        )
        echo(f"run folder: {folder}")
        out = folder / "speed" / "records.jsonl"
    prov = provenance()
    if getattr(args, "fit_data", None):  # one fit per run folder, not one per process
        for _, case in cases:
            if case is not None and "fit_data" in case:
                case["fit_cache"] = str(out.parent / "fitted")
    with records_writer(out, keyed=False) as records:
        if args.suite == "gold":
            rows, cols = _gold_suite(cases, prov, records)
        else:
            rows, cols = _execute_suite(args, cases, prov, records)
    print(text_table(rows, cols))
    dev = f"{prov['device']} ({prov['cpu']})"
    print(f"device: {dev}, {prov['threads']} threads, torch {prov['torch']}")
    print(f"records appended to {out.resolve()}")
    if folder is not None:
        print(f"run folder: {folder}")
    measured = [r for r in rows if "note" not in r or not str(r.get("note", "")).startswith("skip")]
    if measured and all(r.get("error") for r in measured):
        print("sparsebench: every case failed; see the error column", file=sys.stderr)
        return 1
    return 0


def _suite_defaults(args) -> argparse.Namespace:
    """``args`` with the suites' defaults where an option was not given."""
    given = vars(args)
    fill = {k: v for k, v in _SUITE_DEFAULTS.items() if given.get(k) is None}
    if not given.get("lengths"):
        fill["lengths"] = list(DEFAULT_LENGTHS)
    return argparse.Namespace(**{**given, **fill})


def speed_specs(methods: str | None) -> list[tuple[str, str, dict[str, Any]]]:
    """``--methods`` of the execute suite as ``(spec, name, params)``, parsed up front.

    The same syntax as every ``--methods`` (:func:`sparsebench.bench.runs.select_methods`):
    globs and specs separated by ``;``, an item without ``:`` may also list several names
    separated by ``,``. Dense baselines (``sdpa``, ``dense_entmax``, ...) are names too and
    take no parameters.
    """
    from sparsebench.bench import DENSE
    from sparsebench.bench.runs import select_methods

    return select_methods(methods or DEFAULT_SPECS, extra=list(DENSE))


def _validate(case: dict[str, Any]) -> None:
    """The speed harness's check of a case (:func:`sparsebench.bench.validate_case`)."""
    from sparsebench.bench import validate_case

    validate_case(case)


def _gold_cases(args) -> list[tuple[dict, dict | None]]:
    """``(row, case)`` per (n, implementation); ``case`` is ``None`` for a skipped one."""
    from sparsebench.bench import GOLD_IMPLS, gold_case

    impls = [x.strip() for x in (args.methods or "gold,entmax15").split(",") if x.strip()]
    for impl in impls:
        if impl not in GOLD_IMPLS:
            close = difflib.get_close_matches(impl, GOLD_IMPLS, n=1)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(GOLD_IMPLS)}"
            )
            raise CLIError(f"--methods: unknown gold implementation {impl!r}; {hint}")
    cases: list[tuple[dict, dict | None]] = []
    for n in args.lengths:
        for impl in impls:
            if impl != "gold" and n > args.max_dense:
                cases.append(
                    ({"impl": impl, "n": n, "note": f"skipped (n > {args.max_dense})"}, None)
                )
                continue
            case = gold_case(impl, n, args.heads, args.dim, args.repeats)
            _validate(case)
            cases.append(({"impl": impl, "n": n}, case))
    return cases


def _gold_suite(cases, prov: dict, records) -> tuple[list[dict], list[str]]:
    """The gold graph against dense entmax: one record per (implementation, n)."""
    from sparsebench.bench import measure_case

    rows: list[dict] = []
    for row, case in cases:
        if case is None:
            rows.append(row)
            continue
        print(f"measuring {row['impl']} n={row['n']} ...", file=sys.stderr, flush=True)
        rec = measure_case(case)
        rec.update({"suite": "gold", **prov})
        rows.append(rec)
        records.add(rec)
    base = {
        r["n"]: r["time_min_s"] for r in rows if r.get("impl") == "entmax15" and "time_min_s" in r
    }
    for r in rows:
        if "time_min_s" in r and r["n"] in base:
            r["speedup_vs_entmax15"] = base[r["n"]] / r["time_min_s"]
    cols = ["impl", "n", "time_min_s", "time_median_s", "peak_extra_mb", "speedup_vs_entmax15"]
    return rows, [*cols, "error", "note"]


def _execute_cases(args) -> list[tuple[dict, dict | None]]:
    """``(row, case)`` per (n, method spec), every case checked before any is measured."""
    from sparsebench.bench import DENSE

    specs = speed_specs(args.methods)
    cases: list[tuple[dict, dict | None]] = []
    for n in args.lengths:
        for spec, name, params in specs:
            if name in ("entmax15_full", "entmax_bisect_full") and n > args.max_dense:
                continue
            case = {
                "method": name,
                "params": params,
                "n": n,
                "heads": args.heads,
                "dim": args.dim,
                "device": args.device,
                "dtype": getattr(args, "dtype", "float32"),
                "causal": bool(getattr(args, "causal", False)),
                "normalizer": args.normalizer,
                "path": args.path,
                "block_size": args.block_size,
                "repeats": args.repeats,
            }
            if getattr(args, "fit_data", None) and name not in DENSE:
                case["fit_data"] = args.fit_data
            _validate(case)
            cases.append(({"spec": spec, "n": n}, case))
    return cases


def _execute_suite(args, cases, prov: dict, records) -> tuple[list[dict], list[str]]:
    """Predict + layout + kernel per method spec and n, with the ratio to the dense baseline."""
    from sparsebench.bench import measure_case
    from sparsebench.bench.speed import device_label

    rows: list[dict] = []
    for row, case in cases:
        spec, n = row["spec"], row["n"]
        print(f"measuring {spec} n={n} ...", file=sys.stderr, flush=True)
        rec = measure_case(case)
        # The case's own device (provenance names the machine's GPU even for CPU cases).
        rec.update(
            {"suite": "execute", "spec": spec, **prov, "device": device_label(case["device"])}
        )
        records.add(rec)
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
