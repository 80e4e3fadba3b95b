"""Errors of the methods package, and the "did you mean" suggestion their messages carry."""

from __future__ import annotations

import difflib

__all__ = ["SpecError", "UnknownNameError", "suggest"]


class UnknownNameError(KeyError, ValueError):
    """An unknown method or parameter name; the message suggests the closest names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SpecError(ValueError):
    """A method spec or ``key=value`` parameter that cannot be parsed."""


def suggest(name: str, choices: list[str], *, otherwise: str | None = None) -> str:
    """A message tail naming the closest ``choices`` to ``name`` (or all of them).

    Returns:
        ``"; did you mean 'a' or 'b'?"``; when nothing is close, ``otherwise`` if given, else
        ``"; known: ..."`` (``""`` when there are no choices).
    """
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    if otherwise is not None:
        return otherwise
    return f"; known: {', '.join(sorted(choices))}" if choices else ""
