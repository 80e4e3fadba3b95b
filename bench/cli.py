"""The ``sparsebench`` command line: the argument parser and the dispatch to the commands.

The command bodies live beside what they run (:mod:`.commands`, :mod:`.speed_command`); this
module only builds the parser, calls the chosen command and turns user errors into one line.
"""

from __future__ import annotations

import argparse
import sys

from .commands import (
    CLIError,
    cmd_accuracy,
    cmd_datasets,
    cmd_evaluate,
    cmd_leaderboard,
    cmd_methods,
    cmd_run,
    cmd_show,
    cmd_sweep,
)
from .speed_command import cmd_speed

__all__ = ["build_parser", "main"]

_USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    NotImplementedError,
    FileNotFoundError,
    RuntimeError,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sparsebench``."""
    p = argparse.ArgumentParser(
        prog="sparsebench",
        description="Benchmark attention-sparsity predictors against the gold α-entmax graph.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_catalog, _runs, _speed, _report):
        add(sub)
    return p


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
    s.add_argument("--steps", type=int, help="train: number of steps (default: the recipe's)")
    s.add_argument(
        "--rescale-queries",
        action="store_true",
        help="import: multiply q by sqrt(d) (dumps whose queries carry 1/sqrt(d))",
    )
    s.add_argument("--num-seqs", type=int, default=12)
    s.add_argument("--layers", type=int, default=2)
    s.add_argument("--heads", type=int, default=4)
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--dim", type=int, default=16)
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
    s.add_argument("--layer", type=int, help="only this layer (default: all, averaged)")
    s.add_argument("--split", default="eval")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--block-size", type=int, default=None, help="also report block sparsity")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sweep", help="a resumable grid sweep (records as JSON lines)")
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--methods", default="*", help="glob over method names")
    s.add_argument("--grid", default="quick", help="grid setting: quick or paper")
    s.add_argument("--layers", help="comma-separated layers (default: all)")
    s.add_argument("--results", default="results", help="results folder")
    s.add_argument("--out", help="records file (default: RESULTS/<dataset>/records.jsonl)")
    s.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: in this process; ray: one Ray task per layer and method",
    )
    s.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    s.add_argument("--gpus-per-task", type=float, default=0, help="GPUs each Ray task requests")
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
    s.add_argument("--methods", default="*", help="glob over method names")
    s.add_argument("--grid", default="quick", help="quick, paper, or default (one per method)")
    s.add_argument(
        "--windows",
        type=int,
        default=32,
        help="held-out windows of 512 tokens to score, or sentences for embedding-fidelity "
        "(0 = all)",
    )
    s.add_argument("--results", default="results", help="results folder")
    s.set_defaults(func=cmd_accuracy)

    s = sub.add_parser("run", help="the main job on the bundled datasets")
    s.add_argument(
        "--data",
        action="append",
        help="dataset name or directory (repeat; default: the datasets of the bundled models)",
    )
    s.add_argument("--methods", default="*", help="glob over method names")
    s.add_argument("--grid", default="quick", help="grid setting (quick or paper)")
    s.add_argument("--results", default="results", help="results folder")
    s.add_argument(
        "--accuracy-windows",
        type=int,
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
    s.add_argument("--lengths", default="512,1024,2048,4096")
    s.add_argument(
        "--methods",
        help="execute: name or name:k=v,k=v, separated by ';' "
        "(dense baselines: sdpa, dense_entmax, entmax15_full, xformers); "
        "gold: gold,entmax15,entmax15_k64",
    )
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--normalizer", choices=["entmax", "softmax"], default="entmax")
    s.add_argument("--path", default="auto", choices=["auto", "block", "flex", "grouped", "dense"])
    s.add_argument("--block-size", type=int, default=128)
    s.add_argument("--heads", type=int, default=8)
    s.add_argument("--dim", type=int, default=64)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument(
        "--max-dense",
        type=int,
        default=4096,
        help="skip the package's full-matrix entmax above this n",
    )
    s.add_argument("--results", default="results", help="results folder")
    s.add_argument("--out", help="records file (default: RESULTS/speed/records.jsonl)")
    s.set_defaults(func=cmd_speed)


def _report(sub) -> None:
    """Parsers of ``leaderboard`` and ``show``."""
    s = sub.add_parser("leaderboard", help="tables, plots and index.html from records")
    s.add_argument("--results", default="results", help="results folder")
    s.set_defaults(func=cmd_leaderboard)

    s = sub.add_parser("show", help="gold graph beside a method's graph, one head")
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--method", required=True, help="name or name:k=v,k=v")
    s.add_argument("--param", action="append", metavar="K=V", help="method parameter (repeat)")
    s.add_argument("--layer", type=int, default=0)
    s.add_argument("--head", type=int, default=0)
    s.add_argument("--seq", type=int, default=0, help="sequence index in the eval split")
    s.add_argument("--out", help="PNG path (default: show-<data>-<method>-L<l>H<h>.png)")
    s.set_defaults(func=cmd_show)


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2."""
    from sparsebench.datasets import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, DatasetError, *_USER_ERRORS) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"sparsebench: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
