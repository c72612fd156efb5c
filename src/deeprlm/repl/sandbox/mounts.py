"""The worker's view of the filesystem: a minimal root in a mount namespace of its own.

What is not mounted does not exist for the code: no `stat` of a host file, no listing of
the home folder, no socket in /tmp or /run, no host process in /proc. The new root is a
small read-only tmpfs holding bind mounts of the system's and Python's trees and of the
paths the user allowed (read-only), the workspace (read-write), a few devices, and a /proc
of the worker's own pid namespace. Symlinks among those paths (/bin -> usr/bin) are recreated.
Landlock still applies inside, as a second layer.

The workspace itself is a size- and file-limited tmpfs held by the keeper (`keeper.py`),
so the kernel enforces its quota; see `process.Workspace`.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterable

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2

# statvfs flags that a less privileged mount namespace may not clear on a bind mount.
_LOCKED = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)


def _b(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source or fstype or ''} on {target}: {os.strerror(err)}")


def mount_tmpfs(target: str, size_bytes: int, inodes: int, mode: int) -> None:
    options = f"size={size_bytes},nr_inodes={inodes},mode={mode:o}"
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)


def make_private() -> None:
    """Mounts made from here on stay in this namespace, and the host's stay out."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def _locked_flags(path: str) -> int:
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _LOCKED if flags & st)


def _outermost(paths: Iterable[str]) -> list[str]:
    """Paths with none of their ancestors in the list, shortest first."""
    kept: list[str] = []
    for path in sorted(set(paths), key=lambda p: (p.count(os.sep), p)):
        if not any(path == k or path.startswith(k.rstrip(os.sep) + os.sep) for k in kept):
            kept.append(path)
    return kept


def _mount_point(staging: str, path: str, is_dir: bool) -> str:
    target = staging + path
    if os.path.lexists(target):
        return target
    os.makedirs(target if is_dir else os.path.dirname(target), mode=0o755, exist_ok=True)
    if not is_dir:
        with open(target, "w"):
            pass
    return target


def build_root(
    staging: str,
    read: Iterable[str],
    write: Iterable[str],
    devices: Iterable[str],
    notes: list[str],
) -> bool:
    """Makes the minimal root in `staging` (an empty folder) and moves this process into it.
    Must run in a mount namespace of its own, in the worker's pid namespace (for /proc),
    with CAP_SYS_ADMIN there. Returns whether /proc was mounted. Raises OSError when the
    root cannot be made; the process is then still in its old root."""
    make_private()
    mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "size=1048576,nr_inodes=4096,mode=755")
    binds: list[str] = []
    for path in read:
        if os.path.islink(path):
            # /bin -> usr/bin, /lib64 -> usr/lib64 (the dynamic loader's path must resolve),
            # /etc/localtime: the link as it is, and its target mounted where it really is.
            link = staging + path
            if not os.path.lexists(link):
                os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
                os.symlink(os.readlink(path), link)
        if os.path.exists(path):
            binds.append(os.path.realpath(path))
    writable = [os.path.realpath(p) for p in write]
    for path in _outermost(binds):
        # A read-only tree may hold the workspace (allow_read=/tmp): the workspace is then
        # mounted over its place in it, read-write, below.
        target = _mount_point(staging, path, os.path.isdir(path))
        mount(path, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(path))
    for path in writable:
        target = _mount_point(staging, path, True)
        mount(path, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | _locked_flags(path))
    for device in devices:
        if os.path.exists(device):
            target = _mount_point(staging, device, False)
            mount(device, target, None, MS_BIND)
    proc = True
    try:
        os.mkdir(staging + "/proc", 0o555)
        mount("proc", staging + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as exc:
        proc = False
        notes.append(f"no /proc in the sandbox ({exc.strerror})")
    mount(None, staging, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _pivot(staging)
    return proc


def _pivot(staging: str) -> None:
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, f"pivot_root: unknown architecture {platform.machine()}")
    os.chdir(staging)
    if _libc.syscall(number, b".", b".") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    # The old root now lies under the new one at "."; detaching it leaves only the new.
    if _libc.umount2(b".", MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount of the old root: {os.strerror(err)}")
    os.chdir("/")
