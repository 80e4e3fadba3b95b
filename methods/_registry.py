"""The one registry of methods: names to classes, with suggestions and entry-point plugins."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import warnings
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from ._base import Method
from ._errors import SpecError, UnknownNameError, suggest

__all__ = [
    "ENTRY_POINT_GROUP",
    "SpecError",
    "UnknownNameError",
    "check_params",
    "create",
    "from_spec",
    "get",
    "names",
    "parse_spec",
    "register",
]

ENTRY_POINT_GROUP = "sparsebench.methods"

_REGISTRY: dict[str, type[Method]] = {}
_plugins_loaded = False


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator that registers a method under ``name``.

    Raises:
        ValueError: if the name is taken or the class is not a ``Method`` dataclass.
    """
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"method names are lower snake_case, got {name!r}")

    def deco(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ValueError(f"@register({name!r}) needs a subclass of Method, got {cls!r}")
        if not dataclasses.is_dataclass(cls) or "__dataclass_fields__" not in vars(cls):
            raise ValueError(f"{cls.__name__} must be decorated with @dataclass(kw_only=True)")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            other = _REGISTRY[name]
            raise ValueError(
                f"method name {name!r} is already registered by "
                f"{other.__module__}.{other.__qualname__}; pick another name"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_plugins() -> None:
    """Import the methods that other distributions declare in the entry-point group."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin must not break the suite
            warnings.warn(
                f"could not load sparsebench method plugin {ep.name!r}: {e}", stacklevel=2
            )
            continue
        # A module registers its methods on import; a bare class is registered here.
        if isinstance(obj, type) and issubclass(obj, Method) and obj not in _REGISTRY.values():
            register(ep.name)(obj)


def reload_plugins() -> None:
    """Scan the entry-point group again (after installing a plugin in a running process)."""
    global _plugins_loaded
    _plugins_loaded = False
    _load_plugins()


def get(name: str) -> type[Method]:
    """The method class registered as ``name``.

    Raises:
        UnknownNameError: with the closest registered names.
    """
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown method {name!r}{suggest(name, list(_REGISTRY))}") from None


def check_params(cls: type[Method], params: Iterable[str]) -> None:
    """Raise :class:`UnknownNameError` for parameters that ``cls`` does not have.

    The same check as :meth:`Method.check_params`, for callers that hold a class.
    """
    cls.check_params(params)


def create(name: str, **params: Any) -> Method:
    """An instance of method ``name`` with the given parameters."""
    cls = get(name)
    check_params(cls, params)
    return cls(**params)


def names(pattern: str = "*", **tags: Any) -> list[str]:
    """Registered names matching a glob ``pattern`` and, optionally, tag values.

    Example: ``names("sparsefinder*", requires_fit=True)``.
    """
    _load_plugins()
    out = []
    for n in sorted(_REGISTRY):
        if not fnmatch.fnmatchcase(n, pattern):
            continue
        t = _REGISTRY[n].tags
        for key in tags:
            if not hasattr(t, key):
                known = [f.name for f in dataclasses.fields(t)]
                raise UnknownNameError(f"unknown tag {key!r}{suggest(key, known)}")
        if all(getattr(t, key) == v for key, v in tags.items()):
            out.append(n)
    return out


def _parse_value(cls: type[Method], name: str, raw: str) -> Any:
    """``raw`` as the type of field ``name``'s default (JSON when the default is ``None``)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = field.default
    kind = type(default) if default is not dataclasses.MISSING and default is not None else None
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            return raw
        return json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        want = kind.__name__ if kind else "a JSON value"
        raise SpecError(f"parameter {name!r} expects {want}, got {raw!r}") from None


def parse_spec(spec: str, params: Iterable[str] = ()) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``"name:k=v,k=v"`` (plus ``k=v`` items) -> ``(name, params)``.

    The one parser of method specs, for the CLI (``--methods``, ``--param``) and the asv
    suites. Values take the type of the parameter's default (``bool``, ``int``, ``float``,
    ``str``; JSON for parameters whose default is ``None``).

    Raises:
        UnknownNameError: for an unknown method or parameter (with "did you mean").
        SpecError: for an item that is not ``k=v`` or a value of the wrong type.
    """
    name, _, rest = spec.strip().partition(":")
    cls = get(name)
    out: dict[str, Any] = {}
    for item in [*filter(None, rest.split(",")), *params]:
        if "=" not in item:
            raise SpecError(f"method spec {spec!r}: parameters are key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        check_params(cls, {key: None})
        out[key] = _parse_value(cls, key, raw.strip())
    return name, out


def from_spec(spec: str, params: Iterable[str] = ()) -> Method:
    """The method instance a spec names (see :func:`parse_spec`)."""
    name, kwargs = parse_spec(spec, params)
    return create(name, **kwargs)
