"""The ``sparsebench`` command line: the argument parser and the dispatch to the commands.

The command bodies live beside what they run (:mod:`.commands`, :mod:`.run_commands`,
:mod:`.speed_command`); this module only builds the parser, calls the chosen command and turns
user errors into one line: ``sparsebench: error: ...`` on stderr, exit status 2, and the
traceback only with ``--debug``. Counts, layers and lengths are checked as they are parsed.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from .commands import (
    CLIError,
    cmd_datasets,
    cmd_evaluate,
    cmd_leaderboard,
    cmd_methods,
    cmd_publish,
    cmd_show,
)
from .run_commands import cmd_accuracy, cmd_run, cmd_sweep
from .speed_command import cmd_speed

__all__ = ["USER_ERRORS", "build_parser", "error_line", "main"]

#: Exceptions that are the user's to fix: one line and exit status 2 (``--debug``: traceback).
USER_ERRORS: tuple[type[BaseException], ...] = (
    CLIError,
    ValueError,
    KeyError,
    NotImplementedError,
    RuntimeError,
    OSError,
    ImportError,
)

_OS_FIXES: dict[type[OSError], str] = {
    PermissionError: "check its permissions or choose another folder",
    IsADirectoryError: "it is a folder; give a file",
    NotADirectoryError: "a part of the path is a file; give a folder",
    FileNotFoundError: "check the path",
    FileExistsError: "choose another path",
}


def error_line(e: BaseException) -> str:
    """The one line a user error prints: what went wrong, the file where there is one, the fix."""
    if isinstance(e, OSError) and e.filename is not None:
        fix = next((f for t, f in _OS_FIXES.items() if isinstance(e, t)), "")
        msg = f"{e.filename}: {e.strerror or e}" + (f"; {fix}" if fix else "")
    elif isinstance(e, KeyError) and e.args:
        msg = str(e.args[0])
    else:
        msg = str(e) or type(e).__name__
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit status 2."""

    def error(self, message: str):
        """Print ``sparsebench: error: ...`` (with where to find help) and exit 2."""
        self.exit(2, f"sparsebench: error: {message} (see `{self.prog} --help`)\n")


def _ints(text: str, *, low: int, what: str) -> list[int]:
    """Comma-separated integers of at least ``low``; ``argparse.ArgumentTypeError`` otherwise."""
    out = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not {what}")
        out.append(value)
    return out


def _count(text: str) -> int:
    """A positive integer."""
    (value,) = _ints(text, low=1, what="a positive count")
    return value


def _index(text: str) -> int:
    """A non-negative integer (an index: negative indices are not accepted)."""
    (value,) = _ints(text, low=0, what="a valid index (0 or more; no negative indices)")
    return value


def _layers(text: str) -> list[int]:
    """Comma-separated layer indices, each 0 or more."""
    return _ints(text, low=0, what="a valid layer (0 or more; no negative indices)")


def _lengths(text: str) -> list[int]:
    """Comma-separated sequence lengths, each positive."""
    return _ints(text, low=1, what="a valid length (1 or more)")


def _none_or_count(text: str) -> int:
    """0 (all, or skip) or a positive integer."""
    (value,) = _ints(text, low=0, what="a count (1 or more, or 0)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sparsebench``."""
    p = _Parser(
        prog="sparsebench",
        description="Benchmark attention-sparsity predictors against the gold α-entmax graph.",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    for add in (_catalog, _runs, _speed, _report):
        add(_Sub(sub, common))
    return p


class _Sub:
    """Adds subcommand parsers that all take the common options (``--debug``)."""

    def __init__(self, sub, common: argparse.ArgumentParser):
        self.sub, self.common = sub, common

    def add_parser(self, name: str, **kw) -> argparse.ArgumentParser:
        """A subcommand parser with the common options."""
        return self.sub.add_parser(name, parents=[self.common], **kw)


def _run_folder_options(s: argparse.ArgumentParser) -> None:
    """``--results`` and ``--resume`` of the commands that write a run folder."""
    s.add_argument(
        "--results",
        metavar="DIR",
        help="the run folder: a new or empty folder, or a run folder to continue "
        "(default: a new runs/<UTC time>-<command>)",
    )
    s.add_argument("--resume", metavar="DIR", help="continue the run in this run folder")


_METHODS = (
    "a glob over method names, or globs and specs (name:k=v,k=v) separated by ';' "
    "(default: every method)"
)


def _gpus(text: str) -> float:
    """A GPU count of 0 or more (fractions share a GPU)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a GPU count (0 or more)")
    return value


def _catalog(sub) -> None:
    """Parsers of ``methods`` and ``datasets``."""
    s = sub.add_parser("methods", help="list methods, parameters, tags and grids")
    s.add_argument("pattern", nargs="?", default="*", help="glob over method names")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_methods)

    s = sub.add_parser("datasets", help="list, build, describe, import or train datasets")
    s.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "build", "info", "import-sparsefinder", "train", "synthetic"],
    )
    s.add_argument(
        "target",
        nargs="?",
        help="dataset name (a directory for info/synthetic, the .pt dump for import-sparsefinder)",
    )
    s.add_argument(
        "--out", help="build (or import-sparsefinder) into this directory instead of the cache"
    )
    s.add_argument("--steps", type=_count, help="train: number of steps (default: the recipe's)")
    s.add_argument(
        "--rescale-queries",
        action="store_true",
        help="import: multiply q by sqrt(d) (dumps whose queries carry 1/sqrt(d))",
    )
    s.add_argument("--num-seqs", type=_count, default=12)
    s.add_argument("--layers", type=_count, default=2)
    s.add_argument("--heads", type=_count, default=4)
    s.add_argument("--n", type=_count, default=64)
    s.add_argument("--dim", type=_count, default=16)
    s.add_argument("--causal", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_datasets)


def _runs(sub) -> None:
    """Parsers of the scoring commands: ``evaluate``, ``sweep``, ``accuracy`` and ``run``.

    One flat list of arguments per subcommand, so it reads as a table and holds no logic.
    """
    s = sub.add_parser("evaluate", help="score one configuration on a dataset")
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--method", required=True, help="name or name:k=v,k=v")
    s.add_argument("--param", action="append", metavar="K=V", help="method parameter (repeat)")
    s.add_argument("--layer", type=_index, help="only this layer (default: all, averaged)")
    s.add_argument("--split", default="eval", help="the split to score (default: eval)")
    s.add_argument("--batch-size", type=_count, default=16)
    s.add_argument("--block-size", type=_count, default=None, help="also report block sparsity")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sweep", help="a resumable grid sweep (records as JSON lines)")
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--methods", default="*", help=_METHODS)
    s.add_argument("--grid", default="quick", help="grid setting: quick or paper")
    s.add_argument("--layers", type=_layers, help="comma-separated layers (default: all)")
    s.add_argument("--split", default="eval", help="the split to score (default: eval)")
    _run_folder_options(s)
    s.add_argument(
        "--out", help="write the records to this file instead of a run folder's <dataset>/"
    )
    s.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: in this process; ray: one Ray task per layer and method",
    )
    s.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    s.add_argument("--gpus-per-task", type=_gpus, default=0, help="GPUs each Ray task requests")
    s.set_defaults(func=cmd_sweep)

    from sparsebench.datasets import DATASETS

    scored = {name: spec.task for name, spec in DATASETS.items() if spec.task}
    s = sub.add_parser("accuracy", help="task accuracy with predicted attention graphs")
    s.add_argument(
        "--model",
        required=True,
        choices=list(scored),
        help="the dataset whose model is scored, on its task: "
        + ", ".join(f"{name} ({task})" for name, task in scored.items()),
    )
    s.add_argument("--methods", default="*", help=_METHODS)
    s.add_argument("--grid", default="quick", help="quick, paper, or default (one per method)")
    s.add_argument(
        "--windows",
        type=_none_or_count,
        default=32,
        help="held-out windows of 512 tokens to score, or sentences for embedding-fidelity "
        "(0 = all)",
    )
    _run_folder_options(s)
    s.set_defaults(func=cmd_accuracy)

    s = sub.add_parser("run", help="the main job on the bundled datasets")
    s.add_argument(
        "--data",
        action="append",
        help="dataset name or directory (repeat; default: the datasets of the bundled models)",
    )
    s.add_argument("--methods", default="*", help=_METHODS)
    s.add_argument("--grid", default="quick", help="grid setting (quick or paper)")
    _run_folder_options(s)
    s.add_argument(
        "--accuracy-windows",
        type=_none_or_count,
        default=8,
        help="held-out windows for the quick accuracy run (0 = skip it)",
    )
    s.set_defaults(func=cmd_run)


def _speed(sub) -> None:
    """Parser of ``speed``."""
    s = sub.add_parser("speed", help="wall-clock and peak memory across lengths")
    s.add_argument(
        "--suite",
        choices=["execute", "gold"],
        default="execute",
        help="execute: predict + sparse attention per method; gold: the gold graph",
    )
    s.add_argument("--lengths", type=_lengths, default=[512, 1024, 2048, 4096])
    s.add_argument(
        "--methods",
        help="execute: "
        + _METHODS.replace("(default: every method)", "")
        + "(dense baselines: sdpa, dense_entmax, entmax15_full, xformers); "
        "gold: gold,entmax15,entmax15_k64",
    )
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--normalizer", choices=["entmax", "softmax"], default="entmax")
    s.add_argument("--path", default="auto", choices=["auto", "block", "flex", "grouped", "dense"])
    s.add_argument("--block-size", type=_count, default=128)
    s.add_argument("--heads", type=_count, default=8)
    s.add_argument("--dim", type=_count, default=64)
    s.add_argument("--repeats", type=_count, default=3)
    s.add_argument(
        "--max-dense",
        type=_count,
        default=4096,
        help="skip the package's full-matrix entmax above this n",
    )
    _run_folder_options(s)
    s.add_argument("--out", help="append the records to this file instead of a run folder's")
    s.set_defaults(func=cmd_speed)


def _report(sub) -> None:
    """Parsers of ``leaderboard``, ``publish`` and ``show``."""
    s = sub.add_parser("leaderboard", help="tables, plots and index.html from records")
    s.add_argument(
        "--results", default="results", help="the folder to render: results/ or a run folder"
    )
    s.set_defaults(func=cmd_leaderboard)

    s = sub.add_parser("publish", help="merge run folders' records into results/, regenerate it")
    s.add_argument("runs", nargs="+", metavar="RUN", help="run folders to publish")
    s.add_argument("--results", default="results", help="the published folder (default: results)")
    s.add_argument(
        "--replace",
        action="store_true",
        help="replace a dataset's published records when the run's are of another dataset "
        "build or sparsebench version (default: refuse)",
    )
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("show", help="gold graph beside a method's graph, one head")
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--method", required=True, help="name or name:k=v,k=v")
    s.add_argument("--param", action="append", metavar="K=V", help="method parameter (repeat)")
    s.add_argument("--layer", type=_index, default=0)
    s.add_argument("--head", type=_index, default=0)
    s.add_argument("--seq", type=_index, default=0, help="sequence index in the eval split")
    s.add_argument("--out", help="PNG path (default: show-<data>-<method>-L<l>H<h>.png)")
    s.set_defaults(func=cmd_show)


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2 (``--debug``: with the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"sparsebench: error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparsebench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
