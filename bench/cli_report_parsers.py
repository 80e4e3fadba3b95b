"""The parsers of the report commands (``leaderboard``, ``publish``, ``show``, ``compare``).

Split from :mod:`.cli_parsers`, with the same conventions: one flat list of arguments per
subcommand, declared through :class:`~.cli_options.Subcommands`.
"""

from __future__ import annotations

from collections.abc import Callable

from .cli_options import (
    LEADERBOARD_FORMATS,
    Subcommands,
    index,
)

__all__ = ["add_report"]


def add_report(sub: Subcommands, cmds: dict[str, Callable]) -> None:
    """Parsers of ``leaderboard``, ``publish``, ``show`` and ``compare``.

    One flat list of arguments per subcommand, so it reads as a table and holds no logic.
    """
    s = sub.add(
        "leaderboard",
        cmds["leaderboard"],
        summary="tables, plots and index.html from records",
        description="Regenerate a results folder's (or a run folder's) leaderboard from its "
        "records: per dataset a table (in each --format), the frontier and accuracy plots, "
        "and the folder's index.html and README.md.",
        examples=[
            "sparsebench leaderboard",
            "sparsebench leaderboard --results runs/X --format latex,md",
        ],
    )
    s.add_argument("--results", metavar="DIR", default="results", help="results/ or a run folder")
    s.add_argument(
        "--format",
        dest="formats",
        action="append",
        metavar="FMT",
        help=f"table formats, comma-separated or repeated, from {', '.join(LEADERBOARD_FORMATS)} "
        "(latex: a booktabs table, leaderboard.tex) (default: md, csv and html)",
    )

    s = sub.add(
        "publish",
        cmds["publish"],
        summary="merge run folders' records into results/, regenerate it",
        description="Merge the records of run folders into the published results folder, "
        "keyed by configuration, and regenerate its leaderboard. Records of another dataset "
        "build or sparsebench version are refused unless --replace.",
        examples=["sparsebench publish runs/20260101-120000-run"],
    )
    s.add_argument("runs", nargs="+", metavar="RUN", help="run folders to publish")
    s.add_argument("--results", metavar="DIR", default="results", help="the published folder")
    s.add_argument(
        "--replace",
        action="store_true",
        help="replace a dataset's published records when the run's are of another dataset "
        "build or sparsebench version (default: refuse)",
    )

    s = sub.add(
        "show",
        cmds["show"],
        summary="gold graph beside a method's graph, one head",
        description="Draw one head of one held-out sequence: the gold α-entmax graph beside "
        "the graph a method predicts, with the edges each one alone has.",
        examples=["sparsebench show --data shakespeare-lm --method window --param w=9 --head 2"],
    )
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--method", required=True, help="a method name, or a spec name:k=v,k=v")
    s.add_argument("--param", action="append", metavar="K=V", help="method parameter (repeat)")
    s.add_argument("--layer", type=index, default=0, help="layer")
    s.add_argument("--head", type=index, default=0, help="head")
    s.add_argument("--seq", type=index, default=0, help="sequence index in the eval split")
    s.add_argument(
        "--out", metavar="FILE", help="PNG path (default: show-<data>-<method>-L<l>H<h>.png)"
    )

    s = sub.add(
        "compare",
        cmds["compare"],
        summary="differences between two runs, method by method",
        description="Compare two run (or results) folders of the same datasets, method by "
        "method: sparsity at recall 0.95 in each, and the differences B − A in sparsity, task "
        "accuracy and time × dense, each with its paired 95% interval and flagged where that "
        "interval excludes 0. Each dataset must be of the same build in both runs.",
        examples=["sparsebench compare runs/20260101-120000-run runs/20260102-090000-run"],
    )
    s.add_argument("run_a", metavar="RUN_A", help="the first run or results folder")
    s.add_argument("run_b", metavar="RUN_B", help="the second run or results folder")
