"""Linux isolation for the worker process: namespaces, identity, capabilities, limits.

Runs inside the worker before any of the model's code. Every step that the kernel refuses
is reported as a note rather than raised: the host decides how loudly to say so, and the
other layers still hold.

- Namespaces (user, network, pid, ipc, mount): no network device but a loopback that is
  down, no view of the host's processes or files (see `mounts.py`), and when the worker's
  first process ends, the kernel ends every process it started.
- Identity: a worker started by root runs as `nobody` (65534). Root is exempt from the
  process limit and may write any file; `nobody` keeps only CAP_DAC_READ_SEARCH, to read
  Python wherever it is installed (often under /root). Landlock decides what is readable.
- Limits (setrlimit): address space, CPU seconds, processes, file size, open files, no core
  files.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
from dataclasses import dataclass, field

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

CAP_DAC_READ_SEARCH = 2
CAP_LAST = 63
CAPABILITY_VERSION_3 = 0x20080522

NOBODY = 65534

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


@dataclass
class Applied:
    """What isolation actually took effect, and what was refused."""

    namespaces: list[str] = field(default_factory=list)
    uid: int = -1
    quota: bool = False  # the workspace is the keeper's size-limited tmpfs
    private_root: bool = False  # the code sees a minimal root, not the host's
    proc: bool = False  # /proc of the worker's own pid namespace is mounted
    # kill(-1) reaches only the worker's own processes (see `stop_children`).
    kill_all: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def pid_namespace(self) -> bool:
        return "pid" in self.namespaces


# --- namespaces ----------------------------------------------------------------------------


def enter_namespaces(applied: Applied, keeper_fd: int | None = None) -> None:
    """Moves this (single-threaded) process into new network, pid, ipc and mount
    namespaces, inside a user namespace: the keeper's (`keeper_fd`, a pidfd), whose mount
    namespace holds the workspace's quota-limited tmpfs, or else one of its own. The user
    namespace comes first, so that a refusal of the others leaves a usable process.

    The pid namespace takes effect for the next child only: the caller must fork, and the
    child becomes the namespace's first process (see `worker.py`)."""
    joined = False
    if keeper_fd is not None:
        try:
            _check(_libc.setns(keeper_fd, CLONE_NEWUSER | CLONE_NEWNS), "setns")
            joined = True
        except OSError as exc:
            applied.notes.append(
                f"could not join the workspace's namespaces ({exc}): no workspace quota"
            )
        finally:
            os.close(keeper_fd)
    if joined:
        applied.namespaces.append("user")
        applied.quota = True
    elif not enter_user_namespace(applied.notes):
        if os.geteuid() != 0:
            applied.notes.append("no network or pid namespace: they need a user namespace")
            return
    else:
        applied.namespaces.append("user")
    try:
        flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNS
        _check(_libc.unshare(flags), "unshare(net, pid, ipc, mount)")
        applied.namespaces += ["net", "pid", "ipc", "mount"]
    except OSError as exc:
        applied.notes.append(f"no network or pid namespace: the kernel refused them ({exc})")


def enter_user_namespace(notes: list[str]) -> bool:
    """A new user namespace for this (single-threaded) process, with the ids it needs
    mapped. Returns False, with a note, when the kernel refuses it."""
    # Read before unsharing: inside an unmapped namespace they read as the overflow id.
    uid, gid = os.geteuid(), os.getegid()
    try:
        if uid == 0:
            if not _unshare_as_root(CLONE_NEWUSER):
                notes.append("the user namespace has no id map (the helper failed)")
        else:
            _check(_libc.unshare(CLONE_NEWUSER), "unshare(user)")
            try:
                _map_self(uid, gid)
            except OSError as exc:
                notes.append(f"the user namespace has no id map ({exc})")
        return True
    except OSError as exc:
        notes.append(f"no user namespace: the kernel refused it ({exc})")
        return False


def _unshare_as_root(flags: int) -> bool:
    """Root keeps uid 0 and `nobody` mapped in the new user namespace. Writing a map with
    more than the writer's own id needs CAP_SETUID in the parent namespace, which this
    process loses when it unshares, so a child forked beforehand writes it. Raises when
    the unshare fails; returns whether the maps were written."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    parent = os.getpid()
    helper = os.fork()
    if helper == 0:  # the helper: wait for the unshare, write the maps, report, exit
        status = 1
        try:
            os.close(ready_w)
            os.close(done_r)
            if os.read(ready_r, 1) == b"u":
                mapping = f"0 0 1\n{NOBODY} {NOBODY} 1\n"
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{parent}/{name}", "w") as f:
                        f.write(mapping)
                status = 0
            os.write(done_w, b"ok" if status == 0 else b"no")
        finally:
            os._exit(status)
    os.close(ready_r)
    os.close(done_w)
    try:
        result = _libc.unshare(flags)
        errno = ctypes.get_errno()
        os.write(ready_w, b"u" if result == 0 else b"x")
        os.close(ready_w)
        ok = os.read(done_r, 2) == b"ok"
    finally:
        os.close(done_r)
        os.waitpid(helper, 0)
    if result != 0:
        raise OSError(errno, f"unshare(user): {os.strerror(errno)}")
    return ok


def _map_self(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1\n")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1\n")


# --- the worker's own process --------------------------------------------------------------


def die_with_parent() -> None:
    """SIGKILL when the parent dies. Changing the effective uid clears this: call it again
    after `drop_privileges`. The seccomp filter keeps the code from clearing it."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")


def become_subreaper() -> None:
    """Orphans of the code's processes come back to the worker, which can then reap them."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_privileges(applied: Applied) -> None:
    """Root becomes `nobody` with only CAP_DAC_READ_SEARCH; anyone else keeps their id and
    loses every capability. After this the process cannot regain privileges (no_new_privs),
    even through a setuid program."""
    keep = 0
    if os.geteuid() == 0:
        _check(_libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(KEEPCAPS)")
        for cap in range(CAP_LAST + 1):
            # Past the kernel's last capability this fails with EINVAL; that is the end.
            if cap != CAP_DAC_READ_SEARCH and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        keep = 1 << CAP_DAC_READ_SEARCH
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = keep
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    applied.uid = os.getuid()


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpu_s: int
    processes: int
    file_size_bytes: int
    open_files: int


def apply_limits(limits: Limits, applied: Applied) -> None:
    processes = limits.processes
    if "user" not in applied.namespaces:
        # Without a user namespace the kernel counts every process of this user, here and
        # elsewhere; leave room for those that already run.
        processes += _tasks_of(os.getuid())
    wanted = {
        resource.RLIMIT_AS: limits.memory_bytes,
        resource.RLIMIT_CPU: limits.cpu_s,
        resource.RLIMIT_NPROC: processes,
        resource.RLIMIT_FSIZE: limits.file_size_bytes,
        resource.RLIMIT_NOFILE: limits.open_files,
        resource.RLIMIT_CORE: 0,
    }
    for which, value in wanted.items():
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        # CPU: the soft limit sends SIGXCPU, which ends the worker; the hard one is a backstop.
        hard_value = value + 5 if which == resource.RLIMIT_CPU else value
        if hard != resource.RLIM_INFINITY:
            hard_value = min(hard_value, hard)
        resource.setrlimit(which, (value, hard_value))
    # A too-large write fails with EFBIG in the cell instead of killing the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _tasks_of(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid:
                count += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            continue
    return count


# --- processes the code started ------------------------------------------------------------


def stop_children(kill_all: bool) -> int:
    """Kills every process the code started and reaps them. Returns how many were reaped.

    `kill_all` says that kill(-1) reaches only the worker's own processes: in its own pid
    namespace the worker is the first process; under Landlock's signal scope it may signal
    only processes of its own domain. Without either, kill(-1) would reach every process of
    the user, so the worker only reaps what has ended and the rest live on until the REPL
    closes (the host then kills the worker's process group)."""
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped += 1
            continue
        if not kill_all or os.getuid() == 0:
            return reaped
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(-1, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
            reaped += 1
        except ChildProcessError:
            return reaped
