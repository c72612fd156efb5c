"""The sandbox worker: the process that runs the model's code.

The host starts it as a script (`python -I -B worker.py FD`, FD being its end of the
channel) and sends a `config` frame. The worker then locks itself down before it runs any
of the model's code: namespaces (it forks here, and its child, the first process of a new
pid namespace, carries on while the parent waits for it), identity, Landlock, limits. It
loads the context once from the memory file the host wrote, restores the variables of a
worker it replaces, says `ready`, and serves cells: each runs in a `Session` whose sub-call
and tool functions are stubs that ask the host over the channel.

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
import signal  # noqa: E402
import socket  # noqa: E402
import sysconfig  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from deeprlm.repl.base import Cell  # noqa: E402
from deeprlm.repl.sandbox import isolation, landlock  # noqa: E402
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
            if op == "run":
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

    def call(self, fn: str, args: list[Any], **extra: Any) -> Any:
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

    def functions(self) -> dict[str, Callable[..., Any]]:
        def llm_query(prompt: str, model: str | None = None) -> str:
            return self.call("llm_query", [prompt, model])

        def llm_batch(prompts: Any, model: str | None = None) -> list[str]:
            return self.call("llm_batch", [list(prompts), model])

        def llm_map(instruction: str, items: Any, model: str | None = None) -> Any:
            return self.call("llm_map", [instruction, _jsonable(items), model])

        def llm_classify(
            items: Any, labels: Any, instruction: str = "", model: str | None = None
        ) -> Any:
            return self.call(
                "llm_classify", [_jsonable(items), _jsonable(labels), instruction, model]
            )

        def rlm_query(query: str, context: Any = None) -> str:
            return self.call("rlm_query", [query, context])

        def rlm_batch(pairs: Any) -> list[str]:
            return self.call("rlm_batch", [list(pairs)])

        return {
            "llm_query": llm_query,
            "llm_batch": llm_batch,
            "llm_query_batched": llm_batch,
            "llm_map": llm_map,
            "llm_classify": llm_classify,
            "rlm_query": rlm_query,
            "rlm_batch": rlm_batch,
        }

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


def _jsonable(items: Any) -> Any:
    """Items as the channel carries them: a dict stays a dict, other collections (tuples,
    generators, pandas-like sequences) become lists."""
    if isinstance(items, (str, dict, list)):
        return items
    try:
        return list(items)
    except TypeError:
        return items


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
    signal that ended it), which the host reads."""
    child = os.fork()
    if child == 0:
        isolation.die_with_parent()
        os.setsid()
        return
    for fd in closing:
        os.close(fd)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


def _lock_down(config: dict[str, Any], inherited: list[int]) -> tuple[isolation.Applied, int]:
    """Every isolation step, in an order that works: namespaces (and the fork into the pid
    namespace), identity, limits, Landlock. Returns what took effect and the Landlock ABI
    in force (0: none)."""
    applied = isolation.Applied()
    if config["namespaces"]:
        isolation.enter_namespaces(applied)
    else:
        applied.notes.append("no namespaces: turned off in the sandbox settings")
    if applied.pid_namespace:
        _supervise(inherited)
    else:
        isolation.become_subreaper()
    # The host kills the namespace through this pid; /proc is still the host's here.
    applied.pid = int(os.readlink("/proc/self"))
    isolation.drop_privileges(applied)
    # Before Landlock: without a user namespace this counts the user's tasks in /proc.
    isolation.apply_limits(isolation.Limits(**config["limits"]), applied)

    work, state = config["work"], config["state"]
    ruled = None
    if config["landlock"]:
        try:
            ruled = landlock.restrict(_read_paths(config["allow_read"]), [work, state], DEVICES)
        except OSError as exc:
            applied.notes.append(
                f"no Landlock ({exc}): the code can read any file the worker's user can, "
                "and write where that user may"
            )
    else:
        applied.notes.append("no Landlock: turned off in the sandbox settings")
    if ruled is not None:
        if ruled.skipped:
            applied.notes.append(f"could not allow reading: {', '.join(ruled.skipped)}")
        if not ruled.network and "net" not in applied.namespaces:
            applied.notes.append(
                "the network is open: no network namespace, and Landlock "
                f"ABI {ruled.abi} cannot deny TCP (it needs 4)"
            )
        elif "net" not in applied.namespaces:
            applied.notes.append("no network namespace: Landlock denies TCP, but not UDP")
    elif "net" not in applied.namespaces:
        applied.notes.append("the network is open: neither a network namespace nor Landlock")
    applied.kill_all = applied.pid_namespace or (ruled is not None and ruled.scoped)
    if not applied.kill_all:
        applied.notes.append("processes the code starts may outlive their cell")
    return applied, ruled.abi if ruled is not None else 0


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
    session = Session(context, worker.functions(), tools, int(config["max_output_chars"]))
    del context
    snapshot = Snapshot(config["state"])
    restored, lost = snapshot.restore(session.globals) if config["restore"] else ([], {})

    signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(signal.SIGXCPU, _on_cpu_limit)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    threading.Thread(target=worker.read_forever, name="deeprlm-channel", daemon=True).start()
    channel.send(
        {
            "op": "ready",
            "pid": applied.pid,
            "uid": applied.uid,
            "namespaces": applied.namespaces,
            "landlock": abi,
            "notes": applied.notes,
            "restored": restored,
            "lost": lost,
        }
    )
    worker.serve(session, snapshot, applied.kill_all)


if __name__ == "__main__":
    main()
