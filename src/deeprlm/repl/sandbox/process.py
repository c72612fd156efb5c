"""The host's handle on one sandbox worker: its folders, its start, its channel, its end.

`Workspace` is the private folder tree of one REPL (kept across the workers that replace
each other, removed at close; a host killed outright cannot remove its own, so each new
workspace sweeps away those whose host is gone). `WorkerProcess.spawn` writes the context
once into a memory file, starts the worker with a clean environment, sends its config and
waits until it is ready. Killing a worker kills everything it started: the first process
of its pid namespace takes the namespace with it, and the process group covers the
fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from deeprlm.errors import SandboxError
from deeprlm.repl.sandbox.isolation import NOBODY
from deeprlm.repl.sandbox.protocol import ProtocolError, encode, read_frame

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
LOG_TAIL_CHARS = 2_000
CONTEXT_SLICE = 1 << 20
WORKSPACE_PREFIX = "deeprlm-sandbox-"
# Held locked by the host for the workspace's life; the kernel drops the lock when the
# host dies, however it dies, which is what marks a folder as abandoned.
HOST_LOCK = ".host-lock"


class Workspace:
    """`work/` is the worker's current folder (and HOME, and TMPDIR); `state/` holds the
    snapshot of its variables; `worker.log` takes its stderr, for errors at start-up."""

    def __init__(self) -> None:
        sweep_abandoned()
        self.root = tempfile.mkdtemp(prefix=WORKSPACE_PREFIX)
        self._lock = _hold_lock(self.root)
        self.work = os.path.join(self.root, "work")
        self.state = os.path.join(self.root, "state")
        self.log = os.path.join(self.root, "worker.log")
        # The worker (nobody, when the host is root) must pass through the root folder.
        os.chmod(self.root, 0o711)
        for folder in (self.work, self.state):
            os.mkdir(folder, 0o700)
            if os.geteuid() == 0:
                os.chown(folder, NOBODY, NOBODY)

    def log_tail(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log) - LOG_TAIL_CHARS))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def remove(self) -> None:
        remove_tree(self.root)
        with contextlib.suppress(OSError):
            os.close(self._lock)


def _hold_lock(root: str) -> int:
    """Creates the host lock already locked: it is locked under another name and renamed,
    so a sweep never sees it unlocked."""
    fd, path = tempfile.mkstemp(dir=root, prefix=".lock-")
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(path, os.path.join(root, HOST_LOCK))
    return fd


def sweep_abandoned(tempdir: str | None = None) -> list[str]:
    """Removes the workspaces, of this user, whose host no longer holds their lock; returns
    them. Folders without a lock file are left alone: nothing says whose they are."""
    removed = []
    pattern = os.path.join(tempdir or tempfile.gettempdir(), WORKSPACE_PREFIX + "*")
    for root in glob.glob(pattern):
        try:
            if os.lstat(root).st_uid != os.geteuid():
                continue
            fd = os.open(os.path.join(root, HOST_LOCK), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live host holds it
        try:
            remove_tree(root)
            removed.append(root)
        finally:
            os.close(fd)
    return removed


def remove_tree(path: str) -> None:
    """Removes a folder even where the code took the write bit off its own folders."""

    def retry(function: Any, target: str, _: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            function(target)

    shutil.rmtree(path, onerror=retry)


def clean_environment(home: str) -> dict[str, str]:
    """Nothing of the user's environment: no keys, no tokens, no proxies."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # One thread per numeric library: threads count against the process limit.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
    }


@dataclass(frozen=True)
class Ready:
    """What a worker reports once it is locked down and loaded."""

    pid: int
    uid: int
    namespaces: tuple[str, ...]
    landlock_abi: int
    notes: tuple[str, ...]
    restored: tuple[str, ...]
    lost: dict[str, str]


class WorkerProcess:
    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        self.ready: Ready | None = None

    @classmethod
    async def spawn(
        cls,
        workspace: Workspace,
        context: Any,
        config: dict[str, Any],
        timeout: float,
    ) -> WorkerProcess:
        host_end, worker_end = socket.socketpair()
        memory = os.memfd_create("deeprlm-context", os.MFD_CLOEXEC)
        try:
            write_context(memory, context)
            with open(workspace.log, "ab") as log:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-I",
                        "-B",
                        "-X",
                        "utf8",
                        WORKER_SCRIPT,
                        str(worker_end.fileno()),
                    ],
                    pass_fds=(worker_end.fileno(), memory),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    cwd=workspace.work,
                    env=clean_environment(workspace.work),
                    start_new_session=True,
                )
            worker_end.close()
            reader, writer = await asyncio.open_unix_connection(sock=host_end)
            worker = cls(process, reader, writer)
            try:
                worker.send({**config, "op": "config", "context_fd": memory})
                worker.ready = await asyncio.wait_for(worker._wait_ready(), timeout)
            except BaseException as exc:
                await worker.kill()
                if isinstance(exc, TimeoutError):
                    raise SandboxError(
                        f"the sandbox worker did not start within {timeout:g}s"
                        + _log_note(workspace)
                    ) from None
                if isinstance(exc, (EOFError, ProtocolError, OSError)):
                    raise SandboxError(
                        f"the sandbox worker failed to start: it {worker.describe_exit()}"
                        + _log_note(workspace)
                    ) from None
                raise
            return worker
        except BaseException:
            worker_end.close()
            host_end.close()
            raise
        finally:
            os.close(memory)

    async def _wait_ready(self) -> Ready:
        try:
            message = await read_frame(self.reader)
        except asyncio.IncompleteReadError:
            await self.wait(5.0)
            raise EOFError from None
        if message.get("op") != "ready":
            raise ProtocolError(f"expected ready, got {message.get('op')!r}")
        try:
            return Ready(
                pid=int(message["pid"]),
                uid=int(message["uid"]),
                namespaces=tuple(str(n) for n in message["namespaces"]),
                landlock_abi=int(message["landlock"]),
                notes=tuple(str(n) for n in message["notes"]),
                restored=tuple(str(n) for n in message["restored"]),
                lost={str(k): str(v) for k, v in dict(message["lost"]).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"a bad ready frame: {exc}") from None

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    async def receive(self) -> dict[str, Any]:
        return await read_frame(self.reader)

    def alive(self) -> bool:
        return self.process.poll() is None and not self.writer.is_closing()

    async def kill(self) -> None:
        """Kills the worker and all it started, then waits for it (briefly)."""
        if self.process.poll() is None:
            pid = self.ready.pid if self.ready is not None else None
            if pid is not None and pid != self.process.pid:
                # The first process of the namespace: its end ends every process in it, and
                # the supervisor, left alone, reaps it and exits. Its pid cannot have been
                # reused yet: that needs the supervisor to have reaped it, and poll() above
                # says the supervisor has not exited.
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                await self.wait(1.0)
            if self.process.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(self.process.pid, signal.SIGKILL)
        self.writer.close()
        await self.wait(5.0)

    async def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return self.process.returncode

    def describe_exit(self) -> str:
        """How the worker ended, as the end of a sentence the model (and the user) can act
        on: "The sandbox worker ..." """
        code = self.process.poll()
        if code is None:
            return "stopped answering"
        # The supervisor reports its child's death by signal as 128 + the signal.
        signum = -code if code < 0 else code - 128 if code > 128 else 0
        if not signum:
            return f"exited with status {code}"
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if signum == signal.SIGXCPU:
            return f"used up its CPU time ({name})"
        if signum == signal.SIGKILL:
            return f"was killed ({name}: the memory limit, the system, or the code itself)"
        return f"crashed ({name})"


def write_context(fd: int, context: Any) -> None:
    """The context reaches the worker once, through a memory file, never through the
    channel. One text (the common, large case) is written as UTF-8 a slice at a time, so
    the host never holds a second whole copy; lists and dicts are pickled."""
    # Buffered: a raw file may write part of a chunk, and pickle does not check for that.
    with os.fdopen(os.dup(fd), "wb") as f:
        if isinstance(context, str):
            f.write(b"S")
            for start in range(0, len(context), CONTEXT_SLICE):
                f.write(context[start : start + CONTEXT_SLICE].encode("utf-8", "surrogatepass"))
        else:
            f.write(b"P")
            pickle.dump(context, f, protocol=pickle.HIGHEST_PROTOCOL)


def _log_note(workspace: Workspace) -> str:
    tail = workspace.log_tail()
    return f"; its last words:\n{tail}" if tail else ""
