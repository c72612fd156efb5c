"""A seccomp filter: system calls the worker's code may not make, whatever else holds.

The other layers decide what a path or a network address reaches; this one closes what they
do not see. The filter denies (EPERM):

- new sockets, except TCP/IP ones inside the worker's own network namespace. No unix
  socket can be created, so no path in the filesystem (the Docker socket, D-Bus, an
  ssh-agent) and no abstract name can be reached, by `connect`, `sendto` or `sendmsg`
  alike: seccomp cannot read the address those calls carry, so the socket is what it
  refuses. `socketpair` keeps working for stream and seqpacket pairs (asyncio and
  multiprocessing use them): a connected pair of those kinds cannot be pointed anywhere
  else. The worker's own channel was made before the filter and keeps working.
- io_uring, whose queued operations (socket, connect, open) would bypass this filter;
- memory outside the address-space limit: a memfd or a System V shared memory segment
  keeps its pages when unmapped, so `memfd_create` and `shmget` would let the code fill
  the host's memory one limited mapping at a time;
- the kernel's keyrings (`keyctl`, `add_key`, `request_key`): the worker inherits the
  host's session keyring, and possessing it grants access to the keys in it whatever the
  uid; `open_by_handle_at`, which opens a file by its inode rather than its path (past the
  mount namespace's view); and `bpf`, `perf_event_open`, `userfaultfd`, kernel surface no
  cell needs;
- new namespaces (`unshare`, `setns`, `clone` with a namespace flag; `clone3`, whose flags
  seccomp cannot read, says ENOSYS so that the C library falls back to `clone`);
- `prctl(PR_SET_PDEATHSIG)`: the worker's first process dies with its supervisor, which is
  how the host ends everything the code started; the code may not undo that.

Any other architecture than the worker's own (32-bit calls from a 64-bit process) and the
x32 ABI end the process. The program is a few lines of classic BPF, assembled here with
the syscall numbers of x86-64 and aarch64; elsewhere `install` raises and the worker says
so in its notes.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import socket
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# BPF opcodes
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
RET_K = 0x06  # BPF_RET | BPF_K

# Offsets in struct seccomp_data; arguments are 64-bit, little-endian on both
# architectures below, and every argument checked here is an int (its low word).
NR, ARCH = 0, 4


def arg(n: int) -> int:
    return 16 + 8 * n


X32_BIT = 0x40000000
SOCK_TYPE_MASK = 0xF
NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)


@dataclass(frozen=True)
class Arch:
    audit: int
    x32: bool
    calls: dict[str, int]


ARCHES = {
    "x86_64": Arch(
        0xC000003E,
        True,
        {
            "socket": 41,
            "socketpair": 53,
            "clone": 56,
            "prctl": 157,
            "unshare": 272,
            "setns": 308,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "clone3": 435,
            "add_key": 248,
            "request_key": 249,
            "keyctl": 250,
            "shmget": 29,
            "perf_event_open": 298,
            "open_by_handle_at": 304,
            "memfd_create": 319,
            "bpf": 321,
            "userfaultfd": 323,
        },
    ),
    "aarch64": Arch(
        0xC00000B7,
        False,
        {
            "unshare": 97,
            "prctl": 167,
            "socket": 198,
            "socketpair": 199,
            "clone": 220,
            "setns": 268,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "clone3": 435,
            "add_key": 217,
            "request_key": 218,
            "keyctl": 219,
            "shmget": 194,
            "perf_event_open": 241,
            "open_by_handle_at": 265,
            "memfd_create": 279,
            "bpf": 280,
            "userfaultfd": 282,
        },
    ),
}
DENIED = (
    "unshare",
    "setns",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "add_key",
    "request_key",
    "keyctl",
    "memfd_create",
    "shmget",
    "open_by_handle_at",
    "perf_event_open",
    "bpf",
    "userfaultfd",
)


class _Program:
    """Classic BPF with named jump targets, resolved when the program is finished."""

    def __init__(self) -> None:
        self.code: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int = 0, jt: object = 0, jf: object = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, jt, jf, k) in enumerate(self.code):
            offsets = []
            for target in (jt, jf):
                if isinstance(target, str):
                    target = self.labels[target] - index - 1
                assert isinstance(target, int) and 0 <= target < 256
                offsets.append(target)
            out += code.to_bytes(2, "little") + bytes(offsets) + k.to_bytes(4, "little")
        return bytes(out)


def program(arch: Arch, inet: bool) -> bytes:
    """The filter for `arch`; `inet`: allow TCP/IP sockets (only inside a network
    namespace of the worker's own, where they reach nothing)."""
    n = arch.calls
    p = _Program()
    p.op(LD_W_ABS, ARCH)
    p.op(JEQ_K, arch.audit, 0, "kill")
    p.op(LD_W_ABS, NR)
    if arch.x32:
        p.op(JGE_K, X32_BIT, "kill", 0)
    p.op(JEQ_K, n["socket"], "socket", 0)
    p.op(JEQ_K, n["socketpair"], "socketpair", 0)
    p.op(JEQ_K, n["clone"], "clone", 0)
    p.op(JEQ_K, n["prctl"], "prctl", 0)
    p.op(JEQ_K, n["clone3"], "nosys", 0)
    for name in DENIED:
        p.op(JEQ_K, n[name], "deny", 0)
    p.op(RET_K, RET_ALLOW)

    p.label("socket")
    p.op(LD_W_ABS, arg(0))
    if inet:
        p.op(JEQ_K, socket.AF_INET, "allow", 0)
        p.op(JEQ_K, socket.AF_INET6, "allow", "deny")
    else:
        p.op(RET_K, RET_ERRNO | errno.EPERM)

    p.label("socketpair")
    p.op(LD_W_ABS, arg(0))
    p.op(JEQ_K, socket.AF_UNIX, 0, "deny")
    p.op(LD_W_ABS, arg(1))
    p.op(AND_K, SOCK_TYPE_MASK)
    p.op(JEQ_K, socket.SOCK_STREAM, "allow", 0)
    p.op(JEQ_K, socket.SOCK_SEQPACKET, "allow", "deny")

    p.label("clone")
    p.op(LD_W_ABS, arg(0))
    p.op(JSET_K, NAMESPACE_FLAGS, "deny", "allow")

    p.label("prctl")
    p.op(LD_W_ABS, arg(0))
    p.op(JEQ_K, PR_SET_PDEATHSIG, "deny", "allow")

    p.label("allow")
    p.op(RET_K, RET_ALLOW)
    p.label("deny")
    p.op(RET_K, RET_ERRNO | errno.EPERM)
    p.label("nosys")
    p.op(RET_K, RET_ERRNO | errno.ENOSYS)
    p.label("kill")
    p.op(RET_K, RET_KILL_PROCESS)
    return p.assemble()


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def install(inet: bool) -> None:
    """Applies the filter to this thread and every process it starts. Needs no_new_privs
    (set by `isolation.drop_privileges`). Raises OSError where it cannot."""
    arch = ARCHES.get(platform.machine())
    if arch is None:
        raise OSError(0, f"no seccomp filter for the {platform.machine()} architecture")
    code = program(arch, inet)
    buffer = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {errno.errorcode.get(err, err)}")
