"""Declared checks of method parameters: the dataclass fields' types plus bounds in their metadata.

A method declares a parameter's range where it declares the parameter::

    num_clusters: int = param(8, min=1)          # a count
    density: float = predict_time(0.1, min=0, max=1)
    lr: float = param(0.01, above=0)             # strictly positive
    global_tokens: int = predict_time(0, choices=(0, 1, 2))

and :func:`check_values` checks every field against its annotation (``bool``, ``int``, ``float``,
``str``, ``Literal[...]``, each optionally ``| None``) and those bounds: a ``float`` must be
finite, an ``int`` integral (not a bool), a ``Literal`` one of its values. Annotations of other
types are not checked. Checks that relate several parameters go in the method's
``_check_values`` hook.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache
from numbers import Integral, Real
from typing import Any, Literal, NamedTuple

__all__ = ["BOUNDS", "check_values", "param"]

#: Bound keys a field's metadata may carry: inclusive ``min``/``max``, exclusive ``above``, and
#: ``choices`` (the allowed values).
BOUNDS = ("min", "max", "above", "choices")


def param(default: Any, *, refit: bool = True, **bounds: Any) -> Any:
    """A dataclass field with a default and declared bounds (see the module docstring).

    Args:
        default: the default value.
        refit: whether a change needs a refit (``False`` for predict-time parameters).
        **bounds: ``min``, ``max``, ``above`` and ``choices``.

    Raises:
        TypeError: for a bound that is not one of :data:`BOUNDS` (a typo in a declaration).
    """
    unknown = set(bounds) - set(BOUNDS)
    if unknown:
        raise TypeError(f"unknown parameter bound(s) {sorted(unknown)}; use {', '.join(BOUNDS)}")
    return dataclasses.field(default=default, metadata={"refit": refit, **bounds})


class _Kind(NamedTuple):
    """What a field's annotation allows: a base type (or ``None``: unchecked) and ``None``."""

    base: type | None
    optional: bool
    literal: tuple | None


_UNCHECKED = _Kind(None, True, None)


def _kind(annotation: Any) -> _Kind:
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            return _UNCHECKED
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin is Literal:
        return _Kind(None, optional, typing.get_args(annotation))
    if annotation in (bool, int, float, str):
        return _Kind(annotation, optional, None)
    return _UNCHECKED


@cache
def _kinds(cls: type) -> dict[str, _Kind]:
    """Each field's :class:`_Kind`, from the class's resolved annotations (cached per class)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: check the declared bounds only
        hints = {}
    fields = dataclasses.fields(cls)
    return {f.name: _kind(hints[f.name]) if f.name in hints else _UNCHECKED for f in fields}


def _describe(kind: _Kind, meta: typing.Mapping[str, Any]) -> str:
    """What a valid value is, in words: ``an integer >= 1``, ``a finite number in [0, 1]``."""
    choices = kind.literal or meta.get("choices")
    if choices is not None:
        text = "one of " + ", ".join(repr(c) for c in choices)
    else:
        text = {
            bool: "true or false",
            int: "an integer",
            float: "a finite number",
            str: "a string",
        }.get(kind.base, "a value")
        lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
        if lo is not None and hi is not None:
            text += f" in [{lo}, {hi}]"
        elif lo is not None:
            text += f" >= {lo}"
        elif above is not None:
            text += f" > {above}"
        if hi is not None and lo is None:
            text += f" <= {hi}"
    return text + (" or None" if kind.optional else "")


def _ok(value: Any, kind: _Kind, meta: typing.Mapping[str, Any]) -> bool:
    """Whether ``value`` has the field's type and lies within its bounds."""
    if value is None:
        return kind.optional
    if kind.literal is not None and value not in kind.literal:
        return False
    base = kind.base
    if base is bool and not isinstance(value, bool):
        return False
    if base is int and (isinstance(value, bool) or not isinstance(value, Integral)):
        return False
    if base is float and (
        isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
    ):
        return False
    if base is str and not isinstance(value, str):
        return False
    if "choices" in meta and value not in meta["choices"]:
        return False
    if any(b in meta for b in ("min", "max", "above")):
        if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
            return False
        if "min" in meta and value < meta["min"]:
            return False
        if "max" in meta and value > meta["max"]:
            return False
        if "above" in meta and not value > meta["above"]:
            return False
    return True


def check_values(method: Any) -> None:
    """Check every parameter of ``method`` against its annotation and declared bounds.

    Raises:
        ValueError: one line naming the method, the parameter, what it must be and its value.
    """
    cls = type(method)
    kinds = _kinds(cls)
    for f in dataclasses.fields(method):
        value = getattr(method, f.name)
        kind = kinds.get(f.name, _UNCHECKED)
        if not _ok(value, kind, f.metadata):
            who = cls.name if getattr(cls, "name", "") else cls.__name__
            raise ValueError(
                f"method {who!r}: {f.name} must be {_describe(kind, f.metadata)}, got {value!r}"
            )
