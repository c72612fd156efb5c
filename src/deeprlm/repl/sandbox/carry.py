"""Carrying a snapshot of variables between a sandbox's state folder and a folder of the
host's (a saved session), without trusting anything the worker put there.

The worker runs the model's code and can write to its state folder: a "pickle" there may be
a symlink to a host file, a FIFO that blocks whoever opens it, or far larger than any
snapshot. So the host opens every file relative to a folder it opened itself, never
following a symlink, takes regular files only, bounds each size and the total, and copies
bytes it never unpickles. The same care applies the other way, into a fresh worker's state
folder: whatever is in the session's folder is copied as plain files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable

from deeprlm.repl.sandbox.isolation import NOBODY
from deeprlm.repl.sandbox.snapshot import INDEX, MAX_TOTAL_BYTES, MAX_VALUE_BYTES

# An index names at most a few thousand variables; anything larger is not one.
MAX_INDEX_BYTES = 4 << 20
CHUNK = 1 << 20


def copy_snapshot(
    source: str, destination: str, names: Iterable[str], *, owner: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """Copies the index and `NAME.pickle` for each name from `source` into `destination`
    (modules, kept by name in the index, have no file).
    Returns the names copied and those that could not be, with why. `owner`: the uid the
    copies are given (a worker's, when the host runs as root)."""
    copied: list[str] = []
    lost: dict[str, str] = {}
    total = 0
    src = _open_folder(source)
    try:
        dst = _open_folder(destination)
        try:
            try:
                _copy_file(src, dst, INDEX, MAX_INDEX_BYTES, owner)
            except FileNotFoundError:
                return [], {}  # nothing was ever saved there
            except OSError as exc:
                why = f"the snapshot's index could not be carried ({exc.strerror or exc})"
                return [], {name: why for name in names}
            for name in names:
                if not name.isidentifier():
                    continue
                try:
                    total += _copy_file(
                        src,
                        dst,
                        f"{name}.pickle",
                        min(MAX_VALUE_BYTES, MAX_TOTAL_BYTES - total),
                        owner,
                    )
                except FileNotFoundError:
                    lost[name] = "its saved copy is missing"
                    continue
                except OSError as exc:
                    lost[name] = f"its saved copy could not be carried ({exc.strerror or exc})"
                    continue
                copied.append(name)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return sorted(copied), lost


def worker_owner() -> int | None:
    """The uid files for a worker must have: nobody when the host is root (the worker
    drops to it), else the host's own, which the worker's user namespace maps."""
    return NOBODY if os.geteuid() == 0 else None


def _open_folder(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _copy_file(src: int, dst: int, name: str, limit: int, owner: int | None) -> int:
    """Copies one regular file; returns its size. Raises FileNotFoundError when it is not
    there, and OSError (with a reason) for a symlink, a special file or one over `limit`."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=src)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink where a file should be
            raise OSError(exc.errno, "a symlink, not a file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(0, "not a regular file")
        if info.st_size > limit:
            raise OSError(0, f"over the size limit ({info.st_size / 1e6:.0f} MB)")
        out = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dst,
        )
        size = 0
        try:
            while chunk := os.read(fd, CHUNK):
                size += len(chunk)
                if size > limit:  # it grew while being read
                    raise OSError(0, "over the size limit")
                os.write(out, chunk)
            if owner is not None:
                with contextlib.suppress(OSError):
                    os.fchown(out, owner, owner)
        except BaseException:
            os.close(out)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dst)
            raise
        os.close(out)
        return size
    finally:
        os.close(fd)
