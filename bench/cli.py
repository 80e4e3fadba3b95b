"""The ``sparsebench`` command line: the argument parser and the dispatch to the commands.

The subcommand parsers are declared in :mod:`.cli_parsers` (with the shared pieces of
:mod:`.cli_options`); the command bodies live beside what they run (:mod:`.commands`,
:mod:`.run_commands`, :mod:`.speed_command`). This module builds the parser, calls the chosen
command and turns user errors into one line: ``sparsebench: error: ...`` on stderr, exit
status 2, and the traceback only with ``--debug``. Counts, layers and lengths are checked as
they are parsed.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from .cli_options import HelpFormatter, version, wrap
from .cli_parsers import Subcommands, add_catalog, add_runs, add_speed
from .cli_report_parsers import add_report
from .commands import (
    CLIError,
    cmd_compare,
    cmd_evaluate,
    cmd_leaderboard,
    cmd_methods,
    cmd_publish,
    cmd_show,
)
from .dataset_commands import cmd_datasets
from .run_commands import cmd_accuracy, cmd_run, cmd_sweep
from .speed_command import cmd_speed

__all__ = ["COMMANDS", "USER_ERRORS", "build_parser", "error_line", "main"]

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

#: Each subcommand's body.
COMMANDS = {
    "methods": cmd_methods,
    "datasets": cmd_datasets,
    "evaluate": cmd_evaluate,
    "sweep": cmd_sweep,
    "accuracy": cmd_accuracy,
    "run": cmd_run,
    "speed": cmd_speed,
    "leaderboard": cmd_leaderboard,
    "publish": cmd_publish,
    "show": cmd_show,
    "compare": cmd_compare,
}

_OS_FIXES: dict[type[OSError], str] = {
    PermissionError: "check its permissions or choose another folder",
    IsADirectoryError: "it is a folder; give a file",
    NotADirectoryError: "a part of the path is a file; give a folder",
    FileNotFoundError: "check the path",
    FileExistsError: "choose another path",
}

_EXAMPLES = """\
examples:
  sparsebench run                      # the main job on the bundled datasets (a few minutes)
  sparsebench methods                  # what can be scored
  sparsebench evaluate --data shakespeare-lm --method window --param w=5
  sparsebench sweep --data shakespeare-lm --methods 'window;sparsefinder*'
  sparsebench compare RUN_A RUN_B      # two runs of the same datasets, method by method

`sparsebench COMMAND --help` describes a command, with its defaults and an example."""


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sparsebench``."""
    p = _Parser(
        prog="sparsebench",
        description=wrap(
            "Benchmark attention-sparsity predictors against the gold α-entmax graph: graph "
            "quality (recall, sparsity, ...), task accuracy, time and memory."
        ),
        epilog=_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"sparsebench {version()}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    subcommands = Subcommands(sub, common)
    for add in (add_catalog, add_runs, add_speed, add_report):
        add(subcommands, COMMANDS)
    return p


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
