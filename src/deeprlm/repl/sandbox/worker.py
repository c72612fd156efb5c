"""The sandbox worker: the process that runs the model's code.

The host starts it (`python -I -B worker.py FD`, FD being its end of the
channel) and sends a `config` frame. The worker then locks itself down before it runs any
of the model's code: namespaces (it forks here, and its child, the first process of a new
pid namespace, carries on while the parent supervises it), a private root, identity,
limits, Landlock, seccomp. It loads the context once from the memory file the host wrote,
says `ready`, and serves the host's requests: `run` a cell, in a `Session` whose sub-call
and tool functions are stubs that ask the host over the channel (built from their table,
`deeprlm.repl.functions`, with the channel as their transport), or `restore` the variables
a replaced worker saved (unpickling them runs code the model wrote, so it happens only now,
as a cell would), or report its `variables` (names, types, and what the snapshot keeps).

A reader thread owns the channel's incoming side: it hands `run` frames to the main thread,
routes `reply` frames to the threads waiting on them, and turns an `interrupt` frame into a
SIGINT for the main thread, which stops the cell with `CellInterrupted`.
"""

from __future__ import annotations

import os
import sys
import types


def _load_package() -> None:
    """Makes deeprlm's REPL modules importable without running the packages' __init__
    files: those pull in the engine and the model clients, which the worker must not need
    (start time, memory, and less code next to the model's)."""
    here = os.path.dirname(os.path.abspath(__file__))
    repl = os.path.dirname(here)
    package = os.path.dirname(repl)
    for name, path in (
        ("deeprlm", package),
        ("deeprlm.repl", repl),
        ("deeprlm.repl.sandbox", here),
    ):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module


_load_package()

import codecs  # noqa: E402
import itertools  # noqa: E402
import mmap  # noqa: E402
import pickle  # noqa: E402
import queue  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sysconfig  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from deeprlm.repl.base import Cell  # noqa: E402
from deeprlm.repl.functions import REPLFunction  # noqa: E402
from deeprlm.repl.sandbox import isolation, landlock, mounts, seccomp  # noqa: E402
from deeprlm.repl.sandbox.protocol import SyncChannel, rebuild_error  # noqa: E402
from deeprlm.repl.sandbox.snapshot import Snapshot  # noqa: E402
from deeprlm.repl.session import CellInterrupted, Session  # noqa: E402

# System trees the worker may read and execute from, when they exist.
SYSTEM_READ = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/sys/devices/system/cpu",
)
DEVICES = {
    "/dev/null": landlock.READ_FILE | landlock.WRITE_FILE,
    "/dev/zero": landlock.READ_FILE,
    "/dev/random": landlock.READ_FILE,
    "/dev/urandom": landlock.READ_FILE,
}


class _State:
    """What the SIGINT handler and fork hook need to know about the running cell."""

    running = 0  # the seq of the cell running now, 0 between cells
    reason = ""  # why the host asked to stop it
    forked = False  # True in a process the model's code forked
    supervisor = -1  # a pipe that reads as closed once the supervisor has died


_state = _State()


def _on_interrupt(signum: int, frame: Any) -> None:
    if _state.running and _state.reason and not _state.forked:
        raise CellInterrupted(_state.reason)


def _after_fork_in_child() -> None:
    _state.forked = True


class _Slot:
    __slots__ = ("cancelled", "error", "event", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: Any = None
        self.cancelled = False


class Worker:
    def __init__(self, channel: SyncChannel) -> None:
        self.channel = channel
        self.runs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Slot] = {}
        self._lock = threading.Lock()

    # --- the reader thread ---------------------------------------------------------------

    def read_forever(self) -> None:
        main = threading.main_thread().ident
        while True:
            try:
                message = self.channel.receive()
            except Exception:
                message = None
            if message is None:
                # The host is gone (or broke the protocol): nobody is left to answer to.
                os._exit(0)
            op = message["op"]
            if op in ("run", "restore", "variables"):
                self.runs.put(message)
            elif op == "reply":
                with self._lock:
                    slot = self._pending.get(message.get("id"))  # type: ignore[arg-type]
                if slot is not None:
                    slot.value = message.get("value")
                    slot.error = message.get("error")
                    slot.cancelled = bool(message.get("cancelled"))
                    slot.event.set()
            elif op == "interrupt":
                if message.get("seq") == _state.running and _state.running:
                    _state.reason = str(message.get("reason") or "the cell was stopped")
                    signal.pthread_kill(main, signal.SIGINT)  # type: ignore[arg-type]
            elif op == "close":
                os._exit(0)

    # --- calls to the host -----------------------------------------------------------------

    def call(self, fn: str, args: Any, **extra: Any) -> Any:
        """Asks the host to run `fn` and waits for the answer. Tools pass strict JSON; the
        model's prompts are turned into text as the engine would."""
        if _state.forked:
            raise RuntimeError(f"{fn} is not available in a process forked by the code")
        strict = fn == "tool"
        call_id = next(self._ids)
        slot = _Slot()
        with self._lock:
            self._pending[call_id] = slot
        try:
            message = {"op": "call", "id": call_id, "fn": fn, "args": args, **extra}
            try:
                self.channel.send(message, default=None if strict else str)
            except (TypeError, ValueError) as exc:
                what = f"tool {extra.get('tool')}" if strict else fn
                raise TypeError(
                    f"{what}: arguments must be JSON values (str, numbers, lists, dicts) "
                    f"in the sandbox: {exc}"
                ) from None
            slot.event.wait()
        finally:
            with self._lock:
                self._pending.pop(call_id, None)
        if slot.cancelled:
            raise CellInterrupted("the sub-call was cancelled")
        if slot.error is not None:
            raise rebuild_error(slot.error)
        return slot.value

    def transport(self, function: REPLFunction, arguments: dict[str, Any]) -> Any:
        """Carries a REPL function's call to the host (see `deeprlm.repl.functions`)."""
        return self.call(function.name, arguments)

    def tool(self, name: str, doc: str | None) -> Callable[..., Any]:
        def tool(*args: Any, **kwargs: Any) -> Any:
            return self.call("tool", list(args), tool=name, kwargs=kwargs)

        tool.__name__ = tool.__qualname__ = name
        tool.__doc__ = doc
        return tool

    # --- cells -----------------------------------------------------------------------------

    def serve(self, session: Session, snapshot: Snapshot, kill_all: bool) -> None:
        while True:
            message = self.runs.get()
            if message is None:
                return
            seq = int(message.get("seq", 0))
            if message.get("op") == "variables":
                self.channel.send(self.variables(seq, session, snapshot, message))
                continue
            if message.get("op") == "restore":
                restored, lost = self.restore(seq, session, snapshot)
                isolation.stop_children(kill_all)
                reply = {"op": "restored", "seq": seq, "restored": restored, "lost": lost}
                self.channel.send(reply)
                continue
            code = str(message.get("code", ""))
            try:
                _state.reason = ""
                _state.running = seq
                cell = session.execute(code)
                _state.running = 0
            except CellInterrupted as stop:
                # The stop landed outside the model's code, between statements of ours.
                _state.running = 0
                cell = Cell(code=code, output="", error=str(stop) or "the cell was stopped")
            if _state.forked:
                # A process the model's code forked has finished the cell's code: it must
                # not answer in the worker's name.
                os._exit(0)
            isolation.stop_children(kill_all)
            self.report(seq, cell)
            names = [*session.user_variables(), "answer"]
            try:
                snapshot.save(session.globals, names)
            except Exception:
                traceback.print_exc()

    def variables(
        self, seq: int, session: Session, snapshot: Snapshot, message: dict[str, Any]
    ) -> dict[str, Any]:
        """The user's variables and their types, and what the snapshot holds of them. It
        runs after the last cell's snapshot was written (requests are served in order), so
        the host may copy the snapshot once it has this answer. On request it also clears
        `answer` for a new question."""
        if message.get("reset_answer"):
            session.reset_answer()
        types = {name: kind for name, kind in session.show_vars().items() if name != "answer"}
        kept = [name for name in snapshot.kept if name != "answer"]
        lost = {name: why for name, why in snapshot.lost.items() if name != "answer"}
        return {
            "op": "variables",
            "seq": seq,
            "types": types,
            "kept": kept,
            "modules": snapshot.modules,
            "lost": lost,
        }

    def restore(
        self, seq: int, session: Session, snapshot: Snapshot
    ) -> tuple[list[str], dict[str, str]]:
        """Loads the saved variables. Unpickling runs code the model wrote, so this is a
        cell in all but name: it runs after `ready`, can be interrupted, and the host
        bounds it with the cell's timeout."""
        try:
            _state.reason = ""
            _state.running = seq
            result = snapshot.restore(session.globals)
            _state.running = 0
        except CellInterrupted as stop:
            _state.running = 0
            result = [], {"*": str(stop) or "stopped"}
        if _state.forked:
            os._exit(0)
        return result

    def report(self, seq: int, cell: Cell) -> None:
        message = {
            "op": "cell",
            "seq": seq,
            "output": cell.output,
            "error": cell.error,
            "final": cell.final,
            "output_chars": cell.output_chars,
            "answer_content": cell.answer_content,
        }
        try:
            self.channel.send(message)
        except ValueError as exc:  # a final answer or answer content over the frame limit
            message.update(final=None, answer_content="", error=f"ValueError: {exc}")
            self.channel.send(message)


def _on_cpu_limit(signum: int, frame: Any) -> None:
    # The first process of a pid namespace ignores SIGXCPU unless it handles it; end the
    # worker the way the host reads as "used up its CPU time".
    os._exit(128 + signal.SIGXCPU)


# --- start-up ----------------------------------------------------------------------------


def _read_paths(allowed: list[str]) -> list[str]:
    paths = list(SYSTEM_READ)
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        os.path.dirname(sys.modules["deeprlm"].__path__[0]),
        *sysconfig.get_paths().values(),
        *sys.path,
    ]
    for path in candidates:
        if path and os.path.isabs(path) and os.path.realpath(path) != "/":
            paths.append(os.path.realpath(path))
    paths.extend(allowed)
    return [p for p in dict.fromkeys(paths) if os.path.exists(p)]


def _read_context(fd: int) -> Any:
    """The context from the host's memory file (see `process.write_context`), decoded
    straight from the mapped pages: the worker's copy is the only one it makes."""
    with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as data:
        view = memoryview(data)
        try:
            if view[:1] == b"S":
                text, _ = codecs.utf_8_decode(view[1:], "surrogatepass", True)
                return text
            return pickle.loads(view[1:])
        finally:
            view.release()
            os.close(fd)


def _supervise(closing: list[int]) -> None:
    """Forks the first process of the new pid namespace and waits for it. This parent runs
    none of the model's code; it passes the child's end on as its exit status (128 + the
    signal that ended it), which the host reads.

    The host ends the worker through this process, the one it spawned: SIGTERM makes it
    kill the child and reap it; SIGKILL (if that is not enough) kills the child too, by
    PR_SET_PDEATHSIG. Either way the kernel ends every other process of the namespace with
    the child."""
    alive_r, alive_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(alive_w)
        isolation.die_with_parent()
        _state.supervisor = alive_r
        os.setsid()
        return
    os.close(alive_r)
    for fd in closing:
        os.close(fd)
    # A pidfd, not the pid: the handler may run after the child is reaped.
    handle = os.pidfd_open(child)
    signal.signal(signal.SIGTERM, lambda *_: signal.pidfd_send_signal(handle, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


def _rearm_parent_death() -> None:
    """Changing uid cleared PR_SET_PDEATHSIG: set it again, then make sure the supervisor
    did not die in between (its end of the pipe closes when it does)."""
    isolation.die_with_parent()
    if _state.supervisor >= 0:
        ready = select.select([_state.supervisor], [], [], 0)[0]
        os.close(_state.supervisor)
        _state.supervisor = -1
        if ready:
            os._exit(1)


def _lock_down(config: dict[str, Any], inherited: list[int]) -> tuple[isolation.Applied, int]:
    """Every isolation step, in an order that works: namespaces (and the fork into the pid
    namespace), the private root, identity, limits, Landlock, seccomp. Returns what took
    effect and the Landlock ABI in force (0: none)."""
    applied = isolation.Applied()
    keeper_fd = config.get("keeper_fd")
    if keeper_fd is not None and not config.get("join_keeper"):
        os.close(keeper_fd)  # the keeper failed: the host said so in its notes
        keeper_fd = None
    if config["namespaces"]:
        isolation.enter_namespaces(applied, keeper_fd)
    else:
        applied.notes.append("no namespaces: turned off in the sandbox settings")
        if keeper_fd is not None:
            os.close(keeper_fd)
    if applied.pid_namespace:
        _supervise(inherited)
    else:
        isolation.become_subreaper()

    work, state = config["work"], config["state"]
    read = _read_paths(config["allow_read"])
    if "mount" in applied.namespaces:
        try:
            applied.proc = mounts.build_root(
                config["rootfs"], read, [work, state], DEVICES, applied.notes
            )
            applied.private_root = True
        except OSError as exc:
            applied.notes.append(
                f"no private root ({exc}): the code can tell which host files exist, though "
                "it cannot read them"
            )
    os.chdir(work)
    isolation.drop_privileges(applied)
    if applied.pid_namespace:
        _rearm_parent_death()
    # Before Landlock: without a user namespace this counts the user's tasks in /proc.
    isolation.apply_limits(isolation.Limits(**config["limits"]), applied)

    ruled = None
    if config["landlock"]:
        try:
            readable = [*read, "/proc"] if applied.proc else read
            ruled = landlock.restrict(readable, [work, state], DEVICES)
        except OSError as exc:
            applied.notes.append(
                f"no Landlock ({exc}): the code can read any file the worker's user can, "
                "and write where that user may"
            )
    else:
        applied.notes.append("no Landlock: turned off in the sandbox settings")
    network = "net" in applied.namespaces
    try:
        seccomp.install(inet=network)
        sockets = True
    except OSError as exc:
        sockets = False
        applied.notes.append(
            f"no seccomp filter ({exc}): the code can reach unix sockets it can name"
            + ("" if applied.private_root else ", the host's included")
        )
    if ruled is not None:
        if ruled.skipped:
            applied.notes.append(f"could not allow reading: {', '.join(ruled.skipped)}")
        if not network and not sockets and not ruled.network:
            applied.notes.append(
                "the network is open: no network namespace, no seccomp filter, and Landlock "
                f"ABI {ruled.abi} cannot deny TCP (it needs 4)"
            )
        elif not network and not sockets:
            applied.notes.append("no network namespace: Landlock denies TCP, but not UDP")
    elif not network and not sockets:
        applied.notes.append("the network is open: no network namespace, seccomp or Landlock")
    applied.kill_all = applied.pid_namespace or (ruled is not None and ruled.scoped)
    if not applied.kill_all:
        applied.notes.append("processes the code starts may outlive their cell")
    return applied, ruled.abi if ruled is not None else 0


def _forget(state: str) -> list[str]:
    """Removes the saved variables without loading them (a replacement worker whose
    predecessor could not load them). Returns their names, from the file names alone."""
    names = []
    with os.scandir(state) as entries:
        for entry in entries:
            if entry.name.endswith(".pickle") and entry.name[:-7].isidentifier():
                names.append(entry.name[:-7])
            try:
                if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    os.unlink(entry.path)
            except OSError:
                continue
    return sorted(names)


def main() -> None:
    channel_fd = int(sys.argv[1])
    channel = SyncChannel(socket.socket(fileno=channel_fd))
    config = channel.receive()
    if config is None or config.get("op") != "config":
        raise SystemExit(2)
    context_fd = int(config["context_fd"])
    applied, abi = _lock_down(config, [channel_fd, context_fd])
    context = _read_context(context_fd)

    worker = Worker(channel)
    tools = {name: worker.tool(name, doc) for name, doc in config["tools"].items()}
    session = Session(context, worker.transport, tools, int(config["max_output_chars"]))
    del context
    snapshot = Snapshot(config["state"])
    forgotten = _forget(config["state"]) if config.get("forget") else []

    signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(signal.SIGXCPU, _on_cpu_limit)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    threading.Thread(target=worker.read_forever, name="deeprlm-channel", daemon=True).start()
    # stderr is the host's log file, outside the workspace and its quota: it is for start-up
    # errors, which are over now. The cells' output is captured in the session.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    # Nothing the model wrote has run yet: saved variables are loaded after this, on the
    # host's request, as a cell (see `Worker.serve`).
    channel.send(
        {
            "op": "ready",
            "uid": applied.uid,
            "namespaces": applied.namespaces,
            "landlock": abi,
            "notes": applied.notes,
            "forgotten": forgotten,
        }
    )
    worker.serve(session, snapshot, applied.kill_all)


if __name__ == "__main__":
    main()
