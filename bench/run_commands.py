"""The bodies of ``sweep``, ``accuracy`` and ``run``: the commands that write a run folder.

Each checks its arguments against the data first (layers, split, ``--methods``, names), then
opens its run folder (:func:`sparsebench.bench.runs.open_run_folder`: a new
``runs/<UTC time>-<command>``, ``--results DIR`` or ``--resume DIR``), prints it as an absolute
path, writes its records there and prints the folder again at the end. Nothing is written when
a check fails. ``sparsebench publish RUN`` brings a run's records into ``results/``.
"""

from __future__ import annotations

import time
from pathlib import Path

from .commands import CLIError, echo, warn

__all__ = ["bundled_datasets", "cmd_accuracy", "cmd_run", "cmd_sweep", "records_out"]


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
    from sparsebench.bench.runs import sweep, sweep_plan

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
        log=echo,
    )
    echo(
        f"{res['done']} records written, {res['skipped']} already done, "
        f"{res['failed']} failed -> {out.resolve()}"
    )
    if folder is not None:
        echo(f"run folder: {folder}")
    return 0 if res["failed"] == 0 else 1


def cmd_accuracy(args) -> int:
    """Task accuracy with each configuration's graph replacing attention at test time."""
    from sparsebench.bench.runs import accuracy_sweep, select_methods

    select_methods(args.methods)
    folder = _folder(args, "accuracy")
    out = folder / args.model / "accuracy.jsonl"
    windows = None if args.windows == 0 else args.windows
    res = accuracy_sweep(
        args.model, out, methods=args.methods, grid=args.grid, max_windows=windows, log=echo
    )
    echo(
        f"{res['done']} records written, {res['skipped']} already done, "
        f"{res['failed']} failed -> {out}"
    )
    echo(f"run folder: {folder}")
    return 0 if res["failed"] == 0 else 1


def _print_top(path: Path) -> None:
    """The header and first rows of a leaderboard page's table."""
    lines = path.read_text().splitlines()
    table = [line for line in lines if line.startswith("|")][:12]
    ident = next((line for line in lines if line.startswith("From ")), "")
    echo(f"\n{path}:\n{ident}\n" + "\n".join(table))


def cmd_run(args) -> int:
    """The main job: quick sweep of every method on the bundled datasets, then the leaderboard.

    Every record it reports is computed in its own new run folder (or the one ``--results`` /
    ``--resume`` names); the published ``results/`` are not read or written.
    """
    from sparsebench import datasets
    from sparsebench.bench.report import write_leaderboard
    from sparsebench.bench.runs import accuracy_sweep, sweep, sweep_plan

    t0 = time.perf_counter()
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
        out = folder / name / "records.jsonl"
        res = sweep(data, out, dataset=name, methods=args.methods, grid=args.grid, log=echo)
        failed += res["failed"]
        echo(f"{name}: {res['done']} records written, {res['skipped']} already done -> {out}")
        if name in bundled and args.accuracy_windows > 0:
            acc_out = folder / name / "accuracy.jsonl"
            res = accuracy_sweep(
                name,
                acc_out,
                methods=args.methods,
                grid="default",
                max_windows=args.accuracy_windows,
                log=echo,
            )
            failed += res["failed"]
            echo(f"{name}: task accuracy of each method's default configuration -> {acc_out}")
    for p in write_leaderboard(folder, log=warn):
        if p.name == "leaderboard.md":
            _print_top(p)
    echo(f"\nleaderboard: {folder / 'index.html'} ({time.perf_counter() - t0:.0f} s in all)")
    echo(f"run folder: {folder}")
    echo(f"to publish it into results/: sparsebench publish {folder}")
    return 0 if failed == 0 else 1
