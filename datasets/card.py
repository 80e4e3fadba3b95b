"""Dataset names and cards, checked before either becomes a path or a figure.

A dataset *name* becomes a folder (``$SPARSEBENCH_HOME/datasets/<name>``) and a records key, so
it is confined to one path component: letters, digits, ``-``, ``_`` and ``.``. A dataset *card*
(``card.json``) is read from disk, so every field the loader relies on is checked for its type
and range, and every file it names must lie inside the dataset directory.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

__all__ = [
    "CARD_VERSION",
    "DatasetError",
    "card_file",
    "check_card",
    "check_name",
    "name_from",
    "read_card",
]

#: Version of the card format this sparsebench writes and reads.
CARD_VERSION = 1
#: Card fields every dataset card has.
REQUIRED_FIELDS = (
    "name",
    "card_version",
    "alpha",
    "causal",
    "layers",
    "heads",
    "head_dim",
    "splits",
    "files",
)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_MAX_NAME = 128


class DatasetError(ValueError):
    """A dataset directory, card or name that cannot be used; the message says what to do."""


def check_name(name: Any) -> str:
    r"""Check that ``name`` is a dataset name, safe to use as one path component; return it.

    A name is 1-128 letters, digits, ``-``, ``_`` and ``.``, starting with a letter, digit or
    ``_`` (so not ``.``, ``..``, a hidden name or an option); it holds no ``/`` or ``\`` and is
    never absolute.

    Raises:
        DatasetError: naming the bad name and what a name may hold.
    """
    if not isinstance(name, str) or len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else repr(name[:80])
        raise DatasetError(
            f"invalid dataset name {shown}: a name is 1-{_MAX_NAME} letters, digits, '-', '_' "
            "or '.', starting with a letter, digit or '_' (no '/', '\\' or '..')"
        )
    return name


def name_from(text: str, default: str = "dataset") -> str:
    """A valid dataset name made from ``text`` (a file stem, a hub model id, ...).

    Every run of characters a name may not hold becomes ``-``; a leading ``.`` or ``-`` is
    dropped; the result is cut to 128 characters. ``default`` when nothing is left.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).lstrip(".-")[:_MAX_NAME].rstrip("-")
    return slug if slug and _NAME.fullmatch(slug) else default


def read_card(path: str | Path) -> dict[str, Any]:
    """Read and check ``<path>/card.json`` (see :func:`check_card`).

    Raises:
        DatasetError: if the card is missing, unreadable, not JSON or malformed.
    """
    path = Path(path)
    card_path = path / "card.json"
    if not card_path.is_file():
        raise DatasetError(f"{path} has no card.json; it is not a sparsebench dataset")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        reason = str(e).splitlines()[0]
        raise DatasetError(
            f"{card_path} is not valid JSON ({reason}); rebuild the dataset"
        ) from None
    except OSError as e:
        raise DatasetError(
            f"{card_path} cannot be read ({e.strerror}); check its permissions"
        ) from None
    return check_card(card, card_path)


def _bad(card_path: Path | str, field: str, want: str, got: Any) -> DatasetError:
    shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
    return DatasetError(
        f"{card_path}: {field!r} must be {want}, got {shown}; fix the card or rebuild the dataset"
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_card(card: Any, card_path: Path | str = "card.json") -> dict[str, Any]:
    """Check the fields of a dataset card that loading relies on; return the card.

    Checked: a JSON object with every required field; ``card_version`` an int from 1 to
    :data:`CARD_VERSION`; ``name`` a valid name (:func:`check_name`); ``alpha`` a finite number
    > 1; ``causal`` a bool; ``layers``, ``heads`` and ``head_dim`` positive ints; ``splits`` and
    ``files`` mappings, each file entry ``{"file": <file name>, "sha256": <hex>}``; the optional
    ``split_order`` a list of names from ``files``.

    Raises:
        DatasetError: one line naming ``card_path``, the field and the fix.
    """
    if not isinstance(card, dict):
        raise DatasetError(
            f"{card_path} holds a JSON {type(card).__name__}, not an object; rebuild the dataset"
        )
    missing = [key for key in REQUIRED_FIELDS if key not in card]
    if missing:
        raise DatasetError(f"{card_path} lacks {missing}; rebuild the dataset")
    version = card["card_version"]
    if not _positive_int(version):
        raise _bad(card_path, "card_version", "an integer", version)
    if version > CARD_VERSION:
        raise DatasetError(
            f"{card_path} has card version {version}, newer than this sparsebench reads "
            f"({CARD_VERSION}); upgrade sparsebench"
        )
    try:
        check_name(card["name"])
    except DatasetError as e:
        raise DatasetError(f"{card_path}: 'name' is an {e}; fix the card") from None
    alpha = card["alpha"]
    if (
        not isinstance(alpha, (int, float))
        or isinstance(alpha, bool)
        or not math.isfinite(alpha)
        or not alpha > 1
    ):
        raise _bad(card_path, "alpha", "a finite number > 1", alpha)
    if not isinstance(card["causal"], bool):
        raise _bad(card_path, "causal", "true or false", card["causal"])
    for key in ("layers", "heads", "head_dim"):
        if not _positive_int(card[key]):
            raise _bad(card_path, key, "a positive integer", card[key])
    if not isinstance(card["splits"], dict):
        raise _bad(card_path, "splits", "a mapping of split names", card["splits"])
    files = card["files"]
    if not isinstance(files, dict) or not files:
        raise _bad(card_path, "files", "a non-empty mapping {split: {file, sha256}}", files)
    for split, info in files.items():
        if (
            not isinstance(info, dict)
            or not isinstance(info.get("file"), str)
            or not isinstance(info.get("sha256"), str)
        ):
            raise _bad(card_path, f"files.{split}", "{'file': name, 'sha256': hex}", info)
    order = card.get("split_order", list(files))
    if not isinstance(order, list) or any(s not in files for s in order) or not order:
        raise _bad(card_path, "split_order", f"a list of names from files {list(files)}", order)
    return card


def card_file(path: str | Path, entry: str, card_path: Path | str = "card.json") -> Path:
    """The file a card entry names, checked to lie inside the dataset directory ``path``.

    An entry is a file name: not empty, not absolute, no ``..`` part; and once symbolic links
    are resolved the file must still be inside ``path``.

    Raises:
        DatasetError: naming the entry and the card.
    """
    path = Path(path)
    rel = Path(entry)
    outside = (
        not entry
        or rel.is_absolute()
        or bool(rel.drive)
        or any(part == ".." for part in rel.parts)
        or "\\" in entry
    )
    if not outside:
        root = path.resolve()
        target = (path / rel).resolve()
        outside = root != target and root not in target.parents
    if outside:
        raise DatasetError(
            f"{card_path}: file entry {entry!r} lies outside the dataset directory {path}; "
            "a card may only name files inside it; rebuild the dataset"
        )
    return path / rel
