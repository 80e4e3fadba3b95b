"""The pieces every ``sparsebench`` subcommand parser shares: help layout, value types, texts.

Help pages show each option's default and keep the description and the examples as written
(:class:`HelpFormatter`); values are checked as they are parsed, so a bad count or length is a
one-line usage error before any work (``count``, ``index``, ``layer_list``, ``length_list``,
``count_or_zero``, ``gpu_count``). ``METHODS_HELP`` is the one description of
``--methods`` that every subcommand taking it shows.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from collections.abc import Callable, Sequence

__all__ = [
    "DEVICES",
    "LEADERBOARD_FORMATS",
    "METHODS_HELP",
    "HelpFormatter",
    "Subcommands",
    "check_device",
    "count",
    "count_or_zero",
    "device_option",
    "gpu_count",
    "help_width",
    "index",
    "layer_list",
    "length_list",
    "run_folder_options",
    "version",
    "wrap",
]

#: What ``--methods`` means in every subcommand that takes it.
METHODS_HELP = (
    "what to run: a glob over method names ('sparsefinder*'), or globs and specs "
    "(name:k=v,k=v fixes those parameters) separated by ';', e.g. 'window;dsa:density=0.1'"
)

#: The devices ``evaluate``, ``sweep`` and ``accuracy`` run on.
DEVICES = ("cpu", "cuda")

#: The formats ``sparsebench leaderboard --format`` names in its help (the report checks them).
LEADERBOARD_FORMATS = ("md", "csv", "html", "latex")

#: The widest help page, in columns (narrower terminals wrap at their own width).
HELP_WIDTH = 100


def help_width() -> int:
    """The width help pages wrap at: the terminal's, at most :data:`HELP_WIDTH`."""
    return min(shutil.get_terminal_size().columns - 2, HELP_WIDTH)


def wrap(text: str) -> str:
    """``text`` folded to :func:`help_width` (descriptions: the formatter keeps them as given)."""
    return textwrap.fill(text, width=help_width(), break_on_hyphens=False)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with each option's default appended, and descriptions and examples kept as written.

    Descriptions are folded with :func:`wrap` when the parser is built; examples keep their
    lines.

    A default is shown unless it is ``None`` or ``False`` (nothing to show: the help says what
    happens without the option) or the help text already says what the default is.
    """

    def __init__(self, prog: str, **kw):
        super().__init__(prog, width=kw.pop("width", None) or help_width(), **kw)

    def _get_help_string(self, action: argparse.Action) -> str:
        """The action's help, with ``(default: ...)`` where a default is worth showing."""
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


class Subcommands:
    """Adds subcommand parsers that take the common options and explain themselves."""

    def __init__(self, sub, common: argparse.ArgumentParser):
        self.sub, self.common = sub, common

    def add(
        self,
        name: str,
        func: Callable,
        *,
        summary: str,
        description: str,
        examples: Sequence[str],
    ) -> argparse.ArgumentParser:
        """A subcommand parser with its summary, description and examples.

        ``summary`` goes in the list of commands, ``description`` atop the command's help and
        ``examples`` (commands, or ``# comments``) at its end.
        """
        if not (summary and description and examples):
            raise ValueError(f"subcommand {name}: give a summary, a description and an example")
        lines = [e if e.startswith("#") else f"  {e}" for e in examples]
        s = self.sub.add_parser(
            name,
            parents=[self.common],
            help=summary,
            description=wrap(description),
            epilog="examples:\n" + "\n".join(lines),
            formatter_class=HelpFormatter,
        )
        s.set_defaults(func=func)
        return s


def run_folder_options(s: argparse.ArgumentParser) -> None:
    """``--results`` and ``--resume`` of the commands that write a run folder."""
    s.add_argument(
        "--results",
        metavar="DIR",
        help="the run folder: a new or empty folder, or a run folder to continue "
        "(default: a new runs/<UTC time>-<command>)",
    )
    s.add_argument("--resume", metavar="DIR", help="continue the run in this run folder")


def device_option(s: argparse.ArgumentParser) -> None:
    """``--device`` of the commands that score on a device (``cpu`` or ``cuda``)."""
    s.add_argument(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="where q, k and the model run (cuda: refused at once without a CUDA GPU)",
    )


def version() -> str:
    """The installed sparsebench version (``sparsebench.__version__`` where it is set)."""
    import sparsebench

    found = getattr(sparsebench, "__version__", None)
    if found:
        return str(found)
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("sparsebench")
    except PackageNotFoundError:
        return "unknown"


def check_device(device: str) -> str:
    """``device`` if this machine has it: ``cpu`` always, ``cuda`` only with a CUDA GPU.

    Raises:
        ValueError: for ``cuda`` on a machine without CUDA, naming the fix.
    """
    if device == "cpu":
        return device
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use cpu")
    return device


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


def count(text: str) -> int:
    """A positive integer."""
    (value,) = _ints(text, low=1, what="a positive count")
    return value


def index(text: str) -> int:
    """A non-negative integer (an index: negative indices are not accepted)."""
    (value,) = _ints(text, low=0, what="a valid index (0 or more; no negative indices)")
    return value


def layer_list(text: str) -> list[int]:
    """Comma-separated layer indices, each 0 or more."""
    return _ints(text, low=0, what="a valid layer (0 or more; no negative indices)")


def length_list(text: str) -> list[int]:
    """Comma-separated sequence lengths, each positive."""
    return _ints(text, low=1, what="a valid length (1 or more)")


def count_or_zero(text: str) -> int:
    """0 (all, or skip) or a positive integer."""
    (value,) = _ints(text, low=0, what="a count (1 or more, or 0)")
    return value


def gpu_count(text: str) -> float:
    """A GPU count of 0 or more (fractions share a GPU)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a GPU count (0 or more)")
    return value
