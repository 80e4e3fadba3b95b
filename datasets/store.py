"""Writing dataset directories without destroying what is not ours.

A dataset is written into a temporary sibling of its target, ``.<name>.tmp-<host>-<pid>-<rand>``,
then moved into place with :func:`os.replace`. The target may be absent, an empty directory, or
a sparsebench dataset (a directory holding a valid ``card.json`` and only the files its card
names); anything else is refused, so a user's folder or file is never deleted. A dataset being
replaced is first moved aside to ``.<name>.old-<host>-<pid>``, then removed.

Temporaries of a process that was killed are recognised by that naming: a later write to the
same target removes them when their process (same host, pid no longer running) is gone. An
``.old`` folder whose target is missing is the previous complete dataset and is moved back.

:func:`build_lock` is the one-writer lock around a named dataset's build in the cache.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from .card import DatasetError, read_card

__all__ = ["build_lock", "check_target", "clean_stale", "make_temp", "replace_dir"]

_REFUSE = "choose another folder or remove it yourself"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _tag() -> str:
    return f"{_host()}-{os.getpid()}"


def check_target(path: str | os.PathLike) -> str:
    """Whether a dataset may be written at ``path``: ``"absent"``, ``"empty"`` or ``"dataset"``.

    Raises:
        DatasetError: if ``path`` is a file, a symbolic link, a directory that is not a
            sparsebench dataset, or a dataset that also holds files its card does not name.
    """
    path = Path(path)
    if path.is_symlink():
        raise DatasetError(f"{path} is a symbolic link; {_REFUSE}")
    if not path.exists():
        return "absent"
    if not path.is_dir():
        raise DatasetError(f"{path} exists and is not a sparsebench dataset (a file); {_REFUSE}")
    try:
        entries = {p.name for p in path.iterdir()}
    except OSError as e:
        raise DatasetError(f"{path} cannot be listed ({e.strerror}); {_REFUSE}") from None
    if not entries:
        return "empty"
    try:
        card = read_card(path)
    except DatasetError:
        why = " (its card.json is not a dataset card)" if "card.json" in entries else ""
        raise DatasetError(
            f"{path} exists and is not a sparsebench dataset{why}; {_REFUSE}"
        ) from None
    ours = {"card.json"} | {info["file"] for info in card["files"].values()}
    extra = sorted(entries - ours)
    if extra:
        shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
        raise DatasetError(
            f"{path} is a sparsebench dataset but also holds other files ({shown}); "
            f"move them out, or {_REFUSE}"
        )
    return "dataset"


def make_temp(path: Path) -> Path:
    """A new temporary directory beside ``path``, named so :func:`clean_stale` knows its owner.

    It is created with the usual permissions (``0o777`` less the umask), which the dataset
    directory keeps once it is moved into place.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.tmp-{_tag()}-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished directory ``tmp`` to ``path`` (see :func:`check_target`).

    Raises:
        DatasetError: if ``path`` may not be replaced, or changed while ``tmp`` was written.
    """
    kind = check_target(path)
    if kind != "dataset":
        try:
            os.replace(tmp, path)  # onto nothing or an empty directory: atomic
        except OSError as e:
            raise DatasetError(
                f"{path} appeared while the dataset was written ({e.strerror}); try again"
            ) from None
        return
    old = path.with_name(f".{path.name}.old-{_tag()}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.replace(old, path)
        raise DatasetError(
            f"{path} was written by another process at the same time ({e.strerror}); try again"
        ) from None
    shutil.rmtree(old, ignore_errors=True)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OverflowError:
        return False
    return True


def clean_stale(path: str | os.PathLike, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the temporaries that killed writers left beside ``path``; return what was handled.

    Only directories named by :func:`make_temp` or :func:`replace_dir` for this very target,
    written on this host by a process that is no longer running, are touched. A ``.tmp`` folder
    is removed. An ``.old`` folder is the previous dataset: it is moved back when ``path`` is
    missing, and removed otherwise.
    """
    path = Path(path)
    pattern = re.compile(
        rf"\.{re.escape(path.name)}\.(?P<kind>tmp|old)-{re.escape(_host())}-(?P<pid>\d+)(-.*)?"
    )
    handled: list[Path] = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return handled
    for p in sorted(siblings):
        m = pattern.fullmatch(p.name)
        if not m or p.is_symlink() or not p.is_dir() or _pid_running(int(m["pid"])):
            continue
        if m["kind"] == "old" and not os.path.lexists(path):
            try:
                os.replace(p, path)
            except OSError:
                continue  # leave the previous dataset where it is
            handled.append(p)
            if log:
                log(f"restored {path} from an interrupted write ({p.name})")
            continue
        shutil.rmtree(p, ignore_errors=True)
        handled.append(p)
        if log:
            log(f"removed {p}, left by an interrupted write")
    return handled


@contextlib.contextmanager
def build_lock(
    lock_path: Path, what: str, log: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the file lock ``lock_path`` while building ``what``; wait (saying so) if it is held.

    The lock is an OS lock (``filelock``), released when its holder exits, even when killed.
    """
    from filelock import FileLock, Timeout

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if log:
            log(f"waiting for another process building {what} (lock {lock_path})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
