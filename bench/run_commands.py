"""The bodies of ``sweep``, ``accuracy`` and ``run``: the commands that write a run folder.

Each checks its arguments against the data first (layers, split, ``--methods``, names), then
opens its run folder (:func:`sparsebench.bench.runs.open_run_folder`: a new
``runs/<UTC time>-<command>``, ``--results DIR`` or ``--resume DIR``), prints it as an absolute
path, writes its records there and prints the folder again at the end. Nothing is written when
a check fails. ``sparsebench publish RUN`` brings a run's records into ``results/``.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from .cli_options import check_device
from .commands import TABLE_WIDTH, CLIError, echo, names_table, warn

__all__ = [
    "bundled_datasets",
    "cmd_accuracy",
    "cmd_run",
    "cmd_sweep",
    "frontier_ids",
    "records_out",
    "run_summary",
]


def bundled_datasets() -> list[str]:
    """The named datasets extracted from a model that ships with the package.

    ``sparsebench run`` sweeps them by default and scores their models' task accuracy.
    """
    from sparsebench.datasets import DATASETS
    from sparsebench.datasets.shakespeare import MODELS

    return [name for name, spec in DATASETS.items() if spec.model in MODELS]


def records_out(args) -> Path | None:
    """The records file ``--out`` names, checked; ``None`` without ``--out``.

    Raises:
        CLIError: if ``--out`` is a folder, or comes with ``--results``/``--resume``.
    """
    if not getattr(args, "out", None):
        return None
    if args.results or args.resume:
        raise CLIError("give --out FILE or a run folder (--results/--resume), not both")
    out = Path(args.out)
    if out.is_dir():
        raise CLIError(f"--out {args.out}: is a folder; give a records file, e.g. {out}/x.jsonl")
    return out


def _folder(args, command: str) -> Path:
    """Open the command's run folder and print where it is."""
    from sparsebench.bench.runs import open_run_folder

    folder = open_run_folder(
        command, getattr(args, "argv", ()), results=args.results, resume=args.resume
    )
    echo(f"run folder: {folder}")
    return folder


def _dataset_name(data, spec: str) -> str:
    """The name a dataset's records and folder take: its card's name, checked as a name."""
    from sparsebench.datasets import check_name

    return check_name(data.meta.get("name") or Path(spec).name)


def cmd_sweep(args) -> int:
    """Run a resumable grid sweep into a run folder (or ``--out``)."""
    from sparsebench import datasets
    from sparsebench.bench.runs import reuse_freed_memory, sweep, sweep_plan

    check_device(args.device)
    reuse_freed_memory()
    data = datasets.load(args.data, log=echo)
    name = _dataset_name(data, args.data)
    sweep_plan(data, methods=args.methods, grid=args.grid, layers=args.layers, split=args.split)
    out = records_out(args)
    folder = None
    if out is None:
        folder = _folder(args, "sweep")
        out = folder / name / "records.jsonl"
    res = sweep(
        data,
        out,
        dataset=name,
        methods=args.methods,
        grid=args.grid,
        layers=args.layers,
        split=args.split,
        executor=args.executor,
        address=args.address,
        gpus_per_task=args.gpus_per_task,
        device=args.device,
        log=echo,
    )
    echo(
        f"{res['done']} records written, {res['skipped']} already done, "
        f"{res['failed']} failed -> {out.resolve()}"
    )
    if folder is not None:
        echo(f"run folder: {folder}")
    return 0 if res["failed"] == 0 else 1


def frontier_ids(model: str, source: str | Path, which: str = "frontier") -> list[str]:
    """The configurations ``accuracy --configs frontier`` (or ``reported``) scores.

    ``source`` is a run or results folder holding ``<model>/records.jsonl``, the sweep of the
    model's dataset. ``frontier``: :func:`sparsebench.bench.runs.accuracy.frontier_configs`,
    each method's recall-sparsity frontier and its recall 0.90/0.95/0.99 configurations;
    ``reported``: :func:`~sparsebench.bench.runs.accuracy.reported_configs`, the one
    configuration per method that its leaderboard row reports.

    Raises:
        CLIError: when the folder holds no sweep records of the model's dataset.
    """
    records = Path(source) / model / "records.jsonl"
    if not (records.exists() or records.with_name("records.jsonl.gz").exists()):
        raise CLIError(
            f"--from {source}: no sweep records of {model} ({records}); run "
            f"`sparsebench sweep --data {model}` first, or give the folder that has them"
        )
    from sparsebench.bench.report import load_records
    from sparsebench.bench.runs import frontier_configs, reported_configs

    df = load_records(records)
    if which == "reported":
        ids = list(reported_configs(df).values())
    else:
        ids = [i for group in frontier_configs(df).values() for i in group]
    if not ids:
        raise CLIError(f"--from {source}: the records of {model} hold no configuration")
    return list(dict.fromkeys(ids))


def cmd_accuracy(args) -> int:
    """Task accuracy with each configuration's graph replacing attention at test time."""
    from sparsebench.bench.runs import accuracy_sweep, reuse_freed_memory, select_methods

    check_device(args.device)
    reuse_freed_memory()
    select_methods(args.methods)
    only = None
    if args.configs != "grid":
        if not args.from_dir:
            raise CLIError(
                f"--configs {args.configs} needs --from DIR, the run folder of the sweep"
            )
        only = frontier_ids(args.model, args.from_dir, args.configs)
    elif args.from_dir:
        raise CLIError(
            "--from DIR goes with --configs frontier or reported; add one or leave --from out"
        )
    folder = _folder(args, "accuracy")
    out = folder / args.model / "accuracy.jsonl"
    windows = None if args.windows == 0 else args.windows
    res = accuracy_sweep(
        args.model,
        out,
        methods=args.methods,
        grid=args.grid,
        max_windows=windows,
        only=only,
        device=args.device,
        log=echo,
    )
    echo(
        f"{res['done']} records written, {res['skipped']} already done, "
        f"{res['failed']} failed -> {out}"
    )
    echo(f"run folder: {folder}")
    return 0 if res["failed"] == 0 else 1


def _reported_accuracy(folder: Path) -> dict[str, dict]:
    """A dataset folder's accuracy records by configuration id, with their intervals.

    The records are those the leaderboard takes (the dataset build and version of the newest
    sweep record, each configuration's widest run); empty when the folder has no accuracy or
    sweep records.
    """
    from sparsebench.bench.report import load_records
    from sparsebench.bench.report.assemble import accuracy_records
    from sparsebench.bench.report.intervals import widest, with_accuracy_intervals
    from sparsebench.bench.report.summary import newest_identity

    acc_path, sweep_path = folder / "accuracy.jsonl", folder / "records.jsonl"
    if not (acc_path.exists() and sweep_path.exists()):
        return {}
    _, ident = newest_identity(load_records(sweep_path))
    acc, _ = accuracy_records(load_records(acc_path), ident)
    if acc is None or acc.empty:
        return {}
    acc = widest(with_accuracy_intervals(acc))
    return acc.set_index("method_id").to_dict("index")


def _summary_rows(table, accuracy: dict[str, dict]) -> list[dict[str, str]]:
    """The narrow summary's rows of one leaderboard table (its CSV as a DataFrame).

    Δ accuracy is that of the configuration the row reports (``timed_config``: recall 0.95,
    else best recall) from ``accuracy`` (:func:`_reported_accuracy`), else the table's own.
    """
    from sparsebench.bench.report.formatting import format_interval

    def cell(r, key: str, fmt: str) -> str:
        return format_interval(r.get(key), r.get(f"{key}_lo"), r.get(f"{key}_hi"), fmt)

    rows = []
    for _, r in table.iterrows():
        acc = accuracy.get(str(r.get("timed_config")))
        delta = (
            cell(acc, "delta_accuracy", "{:+.3f}")
            if acc is not None
            else cell(r, "delta_accuracy@0.95", "{:+.3f}")
        )
        rows.append(
            {
                "method": str(r["name"]) + (" (reference)" if r.get("reference") else ""),
                "sparsity @ recall 0.95": cell(r, "sparsity@0.95", "{:.3f}"),
                "best recall": cell(r, "best_recall", "{:.3f}"),
                "Δ accuracy": delta,
                "time × dense": cell(r, "speed_x_dense", "{:.2f}"),
            }
        )
    return rows


def run_summary(folder: Path) -> str:
    """A short summary of a run's leaderboard, at most 100 columns wide.

    Per dataset a narrow table: method, sparsity at recall 0.95 (``± half-width`` of its 95%
    interval when the records carry per-sequence values), the best recall of any configuration
    (what a method that never reaches 0.95 does reach), the task-accuracy difference to full
    attention of the configuration the row reports (the recall-0.95 one, else the best-recall
    one), and time over the best dense kernel (from speed records, when the run has any); then
    what the columns mean.
    """
    import pandas as pd

    parts, timed = [], False
    for csv in sorted(folder.glob("*/leaderboard.csv")):
        table = pd.read_csv(csv)
        if table.empty:
            continue
        rows = _summary_rows(table, _reported_accuracy(csv.parent))
        timed = timed or any(r["time × dense"] != "—" for r in rows)
        text = names_table(pd.DataFrame(rows), max_colwidth=32)
        parts.append(f"{csv.parent.name}:\n{text}")
    note = (
        "Δ accuracy: task accuracy minus full attention's, of the configuration at recall 0.95 "
        "(else of the best-recall one); time × dense: predict + attention time over the best "
        "dense kernel. — : not reached or not measured; ± : half-width of the 95% bootstrap "
        "interval. Every column: leaderboard.md beside each dataset's records."
    )
    if not timed:
        note += (
            f" To measure time: sparsebench speed --resume {folder}, then sparsebench "
            f"leaderboard --results {folder}."
        )
    parts.append(textwrap.fill(note, width=TABLE_WIDTH, break_long_words=False))
    return "\n\n".join(parts)


def _run_accuracy(args, name: str, data, fits, folder: Path) -> int:
    """The main job's accuracy pass on one bundled dataset; returns how many configurations failed.

    It scores, per method, the configuration the leaderboard reports (recall 0.95, else best
    recall; :func:`~sparsebench.bench.runs.reported_configs`) with the fits of the sweep just
    run, so nothing is fitted twice and the summary's Δ accuracy has a figure for every method.
    """
    from sparsebench.bench.report import load_records
    from sparsebench.bench.runs import accuracy_sweep, reported_configs

    records = folder / name / "records.jsonl"
    ids = list(reported_configs(load_records(records)).values()) if records.exists() else []
    if not ids:
        echo(f"{name}: no sweep records to choose configurations from; accuracy skipped")
        return 0
    acc_out = folder / name / "accuracy.jsonl"
    res = accuracy_sweep(
        name,
        acc_out,
        methods=args.methods,
        grid=args.grid,
        max_windows=args.accuracy_windows,
        only=ids,
        data=data,
        fits=fits,
        log=echo,
    )
    echo(f"{name}: task accuracy of the configuration each method reports -> {acc_out}")
    return res["failed"]


def cmd_run(args) -> int:
    """The main job: quick sweep of every method on the bundled datasets, then the leaderboard.

    Every record it reports is computed in its own new run folder (or the one ``--results`` /
    ``--resume`` names); the published ``results/`` are not read or written. Each dataset is
    loaded once for its sweep and accuracy pass, which share one set of fits
    (:class:`~sparsebench.bench.runs.FitStore`); freed memory is kept for reuse
    (:func:`~sparsebench.bench.runs.reuse_freed_memory`).
    """
    from sparsebench import datasets
    from sparsebench.bench.report import write_leaderboard
    from sparsebench.bench.runs import FitStore, reuse_freed_memory, sweep, sweep_plan

    t0 = time.perf_counter()
    reuse_freed_memory()  # the dataset builds too
    bundled = bundled_datasets()
    specs = args.data or bundled
    # Every dataset is built if needed and every argument checked before the run folder is
    # made; the data is loaded again for its sweep, so one dataset is in memory at a time.
    names = []
    for spec in specs:
        data = datasets.load(spec, log=echo)
        sweep_plan(data, methods=args.methods, grid=args.grid)
        names.append(_dataset_name(data, spec))
        del data
    folder = _folder(args, "run")
    failed = 0
    for spec, name in zip(specs, names, strict=True):
        data = datasets.load(spec, log=echo)
        fits = FitStore(data)
        out = folder / name / "records.jsonl"
        res = sweep(
            data, out, dataset=name, methods=args.methods, grid=args.grid, log=echo, fits=fits
        )
        failed += res["failed"]
        echo(f"{name}: {res['done']} records written, {res['skipped']} already done -> {out}")
        if name in bundled and args.accuracy_windows > 0:
            failed += _run_accuracy(args, name, data, fits, folder)
        del data, fits
    write_leaderboard(folder, formats=("md", "csv", "html"), log=warn)  # csv: the summary's
    echo(f"\n{run_summary(folder)}\n")
    echo(f"leaderboard: {folder / 'index.html'} ({time.perf_counter() - t0:.0f} s in all)")
    echo(f"run folder: {folder}")
    echo(f"to publish it into results/: sparsebench publish {folder}")
    return 0 if failed == 0 else 1
