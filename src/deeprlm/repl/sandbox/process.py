"""The host's handle on one sandbox worker: its folders, its start, its channel, its end.

`Workspace` is the private folder tree of one REPL (kept across the workers that replace
each other, removed at close; a host killed outright cannot remove its own, so each new
workspace sweeps away those whose host is gone). Where namespaces work, a keeper process
(`keeper.py`) holds the workspace as a size- and file-limited tmpfs for the REPL's life.
`WorkerProcess.spawn` writes the context once into a memory file, starts the worker with a
clean environment, sends its config and waits until it is ready.

The host knows a worker only by what it spawned: the `Popen` object and a pidfd opened at
once, never a pid the worker reports. Killing that process kills everything the code
started: it supervises the first process of the worker's pid namespace, which dies with it
(and the namespace with that); the process group covers the fallback without namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import os
import pickle
import select
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
from deeprlm.repl.sandbox.config import SandboxSettings
from deeprlm.repl.sandbox.isolation import NOBODY
from deeprlm.repl.sandbox.protocol import MAX_FRAME, ProtocolError, encode, read_frame
from deeprlm.textutil import clip

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER_SCRIPT = os.path.join(HERE, "worker.py")
KEEPER_SCRIPT = os.path.join(HERE, "keeper.py")
KEEPER_START_S = 10.0
LOG_TAIL_CHARS = 2_000
# Replies queued for a worker that does not read them: past this, the worker is ended.
MAX_QUEUED = 2 * MAX_FRAME
# Folders nested deeper than this in a workspace are left (and said) rather than followed.
MAX_REMOVE_DEPTH = 200
NOTE_CHARS = 500
# How long a supervisor asked to end its worker may take before it is killed outright.
SUPERVISOR_GRACE_S = 1.0
CONTEXT_SLICE = 1 << 20
WORKSPACE_PREFIX = "deeprlm-sandbox-"
# Held locked by the host for the workspace's life; the kernel drops the lock when the
# host dies, however it dies, which is what marks a folder as abandoned.
HOST_LOCK = ".host-lock"


class Keeper:
    """The process holding a workspace's tmpfs (see `keeper.py`), known by its Popen and a
    pidfd; workers join its namespaces through that pidfd."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pidfd = os.pidfd_open(process.pid)
        self.confirmed = False

    @classmethod
    def launch(cls, root: str, size_bytes: int, files: int) -> Keeper:
        """Starts the keeper without waiting for it: the first worker starts meanwhile, and
        `confirm` is called before it needs the keeper's namespaces."""
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", KEEPER_SCRIPT, root, str(size_bytes), str(files)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=clean_environment("/"),
            start_new_session=True,
        )
        return cls(process)

    def confirm(self) -> None:
        """Waits for the keeper's answer. Raises SandboxError, with the kernel's reason,
        when it could not make the tmpfs."""
        if self.confirmed:
            return
        stdout = self.process.stdout
        assert stdout is not None
        ready = select.select([stdout], [], [], KEEPER_START_S)[0]
        answer = stdout.readline().decode("utf-8", "replace").strip() if ready else ""
        if answer != "ok":
            raise SandboxError(clip(answer, NOTE_CHARS) or "the keeper did not start")
        self.confirmed = True

    def stop(self) -> None:
        """Ends the keeper, and with it the tmpfs and all in it. Safe to call again."""
        if self.pidfd < 0:
            return
        if self.process.returncode is None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        os.close(self.pidfd)
        self.pidfd = -1


class Workspace:
    """`work/` is the worker's current folder (and HOME, and TMPDIR); `state/` holds the
    snapshot of its variables; `rootfs/` is where a worker builds its private root;
    `worker.log` takes its stderr, for errors at start-up. With a keeper, `work/` and
    `state/` live in the keeper's tmpfs; without, on the host's disk, with no quota."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        settings = settings or SandboxSettings()
        sweep_abandoned()
        self.root = tempfile.mkdtemp(prefix=WORKSPACE_PREFIX)
        self._lock = _hold_lock(self.root)
        self.work = os.path.join(self.root, "work")
        self.state = os.path.join(self.root, "state")
        self.rootfs = os.path.join(self.root, "rootfs")
        self.log = os.path.join(self.root, "worker.log")
        self.notes: list[str] = []
        self.keeper: Keeper | None = None
        # The worker (nobody, when the host is root) must pass through the root folder.
        os.chmod(self.root, 0o711)
        for folder in (self.work, self.state):
            os.mkdir(folder, 0o700)
            if os.geteuid() == 0:
                os.chown(folder, NOBODY, NOBODY)
        os.mkdir(self.rootfs, 0o755)
        if not settings.namespaces:
            self.notes.append("no workspace quota: it needs namespaces")
            return
        try:
            size = settings.workspace_mb << 20
            self.keeper = Keeper.launch(self.root, size, settings.workspace_files)
        except OSError as exc:
            self._no_quota(exc)

    def confirm_keeper(self) -> None:
        """Makes sure the keeper holds the workspace, or drops it (and says so)."""
        if self.keeper is None or self.keeper.confirmed:
            return
        try:
            self.keeper.confirm()
        except (SandboxError, OSError) as exc:
            self.keeper.stop()
            self.keeper = None
            self._no_quota(exc)

    def _no_quota(self, reason: Exception) -> None:
        self.notes.append(
            f"no workspace quota ({reason}): the code may fill the disk, one file of at "
            "most the file size limit at a time"
        )

    def log_tail(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log) - LOG_TAIL_CHARS))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def remove(self) -> list[str]:
        """Ends the keeper and removes the folder. Never raises; returns notes on what
        could not be removed."""
        if self.keeper is not None:
            self.keeper.stop()
            self.keeper = None
        left = remove_tree(self.root)
        with contextlib.suppress(OSError):
            os.close(self._lock)
        if not left:
            return []
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        return [clip(f"could not remove from the sandbox's workspace: {shown}", NOTE_CHARS)]


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
            fd = os.open(os.path.join(root, HOST_LOCK), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live host holds it
        try:
            if not remove_tree(root):
                removed.append(root)
        finally:
            os.close(fd)
    return removed


_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str) -> list[str]:
    """Removes the folder `path` and all in it, even where the code took the permissions
    off its own folders, and returns what it could not remove (it never raises).

    Every step is relative to a descriptor of a folder already inside, opened without
    following symlinks: a symlink is removed, never followed, and nothing outside `path`
    is touched, whatever the code left there or changes meanwhile. Permissions are restored
    only on folders opened that way, through their descriptors."""
    left: list[str] = []
    parent_path, name = os.path.split(os.path.abspath(path))
    try:
        parent = os.open(parent_path, _FOLDER)
    except OSError:
        return [path]
    try:
        _remove_entry(parent, name, path, 0, left)
    except (OSError, RecursionError) as exc:
        left.append(f"{path} ({exc})")
    finally:
        os.close(parent)
    return left


def _remove_entry(parent: int, name: str, shown: str, depth: int, left: list[str]) -> None:
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        except OSError:
            left.append(shown)
        return
    folder = _open_folder(parent, name) if depth < MAX_REMOVE_DEPTH else None
    if folder is None:
        left.append(shown)
        return
    before = len(left)
    try:
        for entry in os.listdir(folder):
            _remove_entry(folder, entry, os.path.join(shown, entry), depth + 1, left)
    finally:
        os.close(folder)
    if len(left) > before:
        return  # the folder is not empty; what is left in it was named
    try:
        os.rmdir(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:
        left.append(shown)


def _open_folder(parent: int, name: str) -> int | None:
    """Opens a folder (not a symlink to one) for listing and removing in, giving its owner
    back the rights a folder of mode 0 or 0500 took away."""
    try:
        folder = os.open(name, _FOLDER, dir_fd=parent)
    except PermissionError:
        # No read right: reach it by an O_PATH descriptor (which needs none), and change
        # the mode through that descriptor, so it is this folder that changes, not a
        # symlink put in its place.
        try:
            handle = os.open(name, os.O_PATH | _FOLDER, dir_fd=parent)
        except OSError:
            return None
        try:
            if os.fstat(handle).st_uid != os.geteuid():
                return None
            os.chmod(f"/proc/self/fd/{handle}", stat.S_IRWXU)
            folder = os.open(".", _FOLDER, dir_fd=handle)
        except OSError:
            return None
        finally:
            os.close(handle)
    except OSError:
        return None
    try:
        mode = os.fstat(folder).st_mode
        if mode & stat.S_IRWXU != stat.S_IRWXU:
            os.fchmod(folder, mode | stat.S_IRWXU)
    except OSError:
        pass
    return folder


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
    """What a worker reports once it is locked down and loaded, before any of the model's
    code has run in it. Informative only: nothing here says which process to signal."""

    uid: int
    namespaces: tuple[str, ...]
    landlock_abi: int
    notes: tuple[str, ...]
    forgotten: tuple[str, ...]  # saved variables dropped unloaded (spawned with forget)


class WorkerProcess:
    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        # Opened while the process is our unreaped child, so it is this process for good.
        self.pidfd = os.pidfd_open(process.pid)
        self.reader = reader
        self.writer = writer
        self.ready: Ready | None = None
        self.broken = ""  # why the host cut the channel, if it did

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
        passed = [worker_end.fileno(), memory]
        keeper = workspace.keeper
        if keeper is not None:
            passed.append(keeper.pidfd)
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
                    pass_fds=passed,
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
                if keeper is not None:
                    # The keeper started with the workspace; its start overlaps this one's.
                    await asyncio.to_thread(workspace.confirm_keeper)
                    config = {
                        **config,
                        "keeper_fd": keeper.pidfd,
                        "join_keeper": workspace.keeper is not None,
                    }
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
            message, _ = await read_frame(self.reader)
        except asyncio.IncompleteReadError:
            await self.wait(5.0)
            raise EOFError from None
        if message.get("op") != "ready":
            raise ProtocolError(f"expected ready, got {message.get('op')!r}")
        try:
            return Ready(
                uid=int(message["uid"]),
                namespaces=tuple(clip(str(n), 20) for n in message["namespaces"][:10]),
                landlock_abi=int(message["landlock"]),
                notes=tuple(clip(str(n), NOTE_CHARS) for n in message["notes"][:20]),
                forgotten=tuple(clip(str(n), 100) for n in message["forgotten"][:100]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"a bad ready frame: {exc}") from None

    def send(self, message: dict[str, Any]) -> None:
        """Queues a frame. A worker that lets replies pile up past MAX_QUEUED (it sends
        requests but does not read) is cut off: its reader then sees the channel end."""
        if self.writer.is_closing():
            return
        self.writer.write(encode(message))
        queued = self.writer.transport.get_write_buffer_size()
        if queued > MAX_QUEUED:
            self.broken = (
                f"The sandbox worker left {queued / 2**20:.0f} MiB of replies unread and was killed"
            )
            self.writer.transport.abort()

    async def drain(self) -> None:
        """Waits while replies are queued past the transport's high-water mark: a worker
        that does not read stops being read from (backpressure)."""
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def receive(self) -> tuple[dict[str, Any], int]:
        """The next frame and its size in bytes."""
        return await read_frame(self.reader)

    def alive(self) -> bool:
        return self.process.poll() is None and not self.writer.is_closing()

    def _supervised(self) -> bool:
        """The spawned process is a supervisor (it runs none of the model's code) whose
        child is the first process of the worker's pid namespace."""
        return self.ready is not None and "pid" in self.ready.namespaces

    def signal(self, signum: int) -> None:
        """Signals the process the host spawned, through its pidfd; SIGKILL goes to its
        process group too. Only while it is unreaped, so neither can name another process."""
        if self.process.returncode is None and self.pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signum)
            if signum == signal.SIGKILL:
                with contextlib.suppress(OSError):
                    os.killpg(self.process.pid, signal.SIGKILL)

    def kill_now(self) -> None:
        """For finalizers, outside any event loop: the supervisor's way when there is one
        (it kills and reaps the namespace), SIGKILL when that does not end it."""
        if self._supervised():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(SUPERVISOR_GRACE_S)
        self.signal(signal.SIGKILL)

    async def kill(self) -> None:
        """Kills the worker and all it started, then waits for it (briefly)."""
        if self._supervised():
            self.signal(signal.SIGTERM)
            await self.wait(SUPERVISOR_GRACE_S)
        self.signal(signal.SIGKILL)
        self.writer.close()
        await self.wait(5.0)
        if self.process.returncode is not None and self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

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
