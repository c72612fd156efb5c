"""The sandboxed REPL against the `REPL` protocol, with a small fake host: state, sub-calls,
tools, finishing, timeouts, crashes, cancellation and clean-up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from deeprlm.errors import InputError, SubCallLimitError
from deeprlm.repl.base import REPLSettings
from deeprlm.repl.sandbox import SandboxREPL, SandboxSettings
from deeprlm.repl.sandbox.process import WORKSPACE_PREFIX, Workspace, sweep_abandoned
from deeprlm.settings import Settings

FAST = SandboxSettings(stop_grace_s=0.5)


class FakeHost:
    """Answers sub-calls itself and records them; `gate` can hold llm_query answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.gate: asyncio.Event | None = None
        self.cancelled = 0

    async def llm_query(self, prompt: str, model: str | None = None) -> str:
        self.calls.append(("llm_query", (prompt, model)))
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if prompt == "over budget":
            raise SubCallLimitError("sub-call budget of 0 reached")
        return f"llm:{prompt}" + (f"@{model}" if model else "")

    async def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        self.calls.append(("llm_batch", list(prompts)))
        return [f"llm:{p}" for p in prompts]

    async def rlm_query(self, query: str, context: Any = None) -> str:
        self.calls.append(("rlm_query", (query, context)))
        return f"rlm:{query}:{context}"

    async def rlm_batch(self, pairs: Sequence[Any]) -> list[str]:
        self.calls.append(("rlm_batch", list(pairs)))
        return [f"rlm:{q}:{c}" for q, c in pairs]


def namespace_init(supervisor: int) -> int:
    """The host pid of the first process of a worker's pid namespace: the only child of
    the process the host spawned."""
    with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
        return int(f.read().split()[0])


def in_sandbox(
    body: Callable[[SandboxREPL, FakeHost], Awaitable[Any]],
    *,
    context: Any = "the context",
    settings: SandboxSettings = FAST,
    repl_settings: REPLSettings | None = None,
) -> Any:
    async def main() -> Any:
        host = FakeHost()
        sandbox = SandboxREPL(settings)
        await sandbox.start(context, host, repl_settings or REPLSettings())
        try:
            return await body(sandbox, host)
        finally:
            await sandbox.close()

    return asyncio.run(main())


def test_state_persists_and_context_is_there():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        first = await sandbox.run("n = len(context)\nwords = context.split()")
        assert first.error is None
        cell = await sandbox.run("print(n, words)\nn * 2")
        assert cell.output == "11 ['the', 'context']\n22\n"
        assert cell.final is None

    in_sandbox(body)


def test_list_and_dict_contexts_arrive_whole():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        cell = await sandbox.run("type(context).__name__, sorted(context), context['b']")
        assert cell.output == "('dict', ['a', 'b'], 'é\\udcff')\n"

    # A lone surrogate (a byte read with surrogateescape) must cross intact.
    in_sandbox(body, context={"a": "x", "b": "é\udcff"})


def test_sub_calls_travel_to_the_host():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        cell = await sandbox.run(
            "a = llm_query('p1', model='m')\n"
            "b = llm_batch(['p2', 'p3'])\n"
            "c = llm_query_batched(['p4'])\n"
            "d = rlm_query('q', context=['x'])\n"
            "e = rlm_batch([('q1', 'c1'), ('q2', 'c2')])\n"
            "print(a, b, c, d, e)"
        )
        assert cell.error is None
        assert cell.output == (
            "llm:p1@m ['llm:p2', 'llm:p3'] ['llm:p4'] rlm:q:['x'] ['rlm:q1:c1', 'rlm:q2:c2']\n"
        )
        # A batch is one request carrying the list, not one request per prompt.
        assert host.calls == [
            ("llm_query", ("p1", "m")),
            ("llm_batch", ["p2", "p3"]),
            ("llm_batch", ["p4"]),
            ("rlm_query", ("q", ["x"])),
            ("rlm_batch", [["q1", "c1"], ["q2", "c2"]]),
        ]

    in_sandbox(body)


def test_sub_calls_from_threads_of_the_code_run_concurrently():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        host.gate = asyncio.Event()
        task = asyncio.ensure_future(
            sandbox.run(
                "from concurrent.futures import ThreadPoolExecutor\n"
                "with ThreadPoolExecutor(4) as pool:\n"
                "    out = list(pool.map(llm_query, ['a', 'b', 'c', 'd']))\n"
                "out"
            )
        )
        # All four requests reach the host while none has been answered.
        for _ in range(200):
            if len(host.calls) == 4:
                break
            await asyncio.sleep(0.01)
        assert len(host.calls) == 4
        host.gate.set()
        cell = await task
        assert cell.output == "['llm:a', 'llm:b', 'llm:c', 'llm:d']\n"

    in_sandbox(body)


def test_host_errors_reach_the_code_with_their_own_type():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        cell = await sandbox.run(
            "try:\n"
            "    llm_query('over budget')\n"
            "except Exception as exc:\n"
            "    caught = type(exc).__name__\n"
            "caught"
        )
        assert cell.output == "'SubCallLimitError'\n"
        cell = await sandbox.run("llm_query('over budget')")
        assert "SubCallLimitError: sub-call budget of 0 reached" in (cell.error or "")

    in_sandbox(body)


def test_tools_run_in_the_host_process():
    seen: list[int] = []

    def where(tag: str, *, times: int = 1) -> dict[str, Any]:
        """Says which process ran it."""
        seen.append(os.getpid())
        return {"tag": tag * times, "pid": os.getpid()}

    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        cell = await sandbox.run(
            "import os\nr = where('ab', times=2)\nprint(r['tag'], r['pid'] != os.getpid())"
        )
        assert cell.output == "abab True\n"
        assert seen == [os.getpid()]
        cell = await sandbox.run("where.__doc__")
        assert cell.output == "'Says which process ran it.'\n"
        cell = await sandbox.run("where(object())")
        assert "must be JSON values" in (cell.error or "")
        assert seen == [os.getpid()]

    in_sandbox(body, repl_settings=REPLSettings(tools={"where": where}))


def test_final_final_var_and_answer_end_the_cell():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        cell = await sandbox.run("FINAL(6 * 7)\nprint('not reached')")
        assert (cell.final, cell.output) == ("42", "")
        await sandbox.run("result = ['a', 1]")
        assert (await sandbox.run("FINAL_VAR('result')")).final == "['a', 1]"
        missing = await sandbox.run("FINAL_VAR('nope')")
        assert missing.final is None and "no variable named 'nope'" in (missing.error or "")
        progress = await sandbox.run("answer['content'] = 'half'")
        assert (progress.final, progress.answer_content) == (None, "half")
        done = await sandbox.run("answer['content'] += ' and half'\nanswer['ready'] = True")
        assert done.final == "half and half"
        assert "result" in (await sandbox.run("SHOW_VARS()")).output

    in_sandbox(body)


def test_output_is_bounded_in_the_worker():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        cell = await sandbox.run("for i in range(5000):\n    print('line', i)")
        assert cell.output_chars == sum(len(f"line {i}\n") for i in range(5000))
        assert len(cell.output) < 400
        assert cell.output.startswith("line 0\n") and cell.output.endswith("line 4999\n")

    in_sandbox(body, repl_settings=REPLSettings(max_output_chars=300))


def test_a_timeout_stops_the_cell_and_keeps_the_variables():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        await sandbox.run("kept = 'yes'")
        cell = await sandbox.run("print('started')\nwhile True:\n    pass", timeout=0.3)
        assert cell.error == "TimeoutError: the cell ran longer than 0.3s and was stopped"
        assert cell.output == "started\n"
        after = await sandbox.run("kept, len(context)")
        assert after.output == "('yes', 11)\n"

    in_sandbox(body)


def test_a_cell_that_ignores_the_stop_gets_a_fresh_worker():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        await sandbox.run("import math as m\nkept = {'a': [1, 2]}\ndef f():\n    return 1")
        cell = await sandbox.run(
            "while True:\n    try:\n        while True:\n            pass\n"
            "    except BaseException:\n        pass",
            timeout=0.3,
        )
        error = cell.error or ""
        assert error.startswith("TimeoutError: the cell ran longer than 0.3s")
        assert "did not stop within 0.5s" in error
        assert "variables kept from the last finished cell: kept, m" in error
        assert "lost: f (function cannot be kept" in error
        after = await sandbox.run("kept, m.sqrt(4), context")
        assert after.output == "({'a': [1, 2]}, 2.0, 'the context')\n"

    in_sandbox(body)


def test_a_crash_ends_the_cell_not_the_repl():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        await sandbox.run("before = 41")
        cell = await sandbox.run("import ctypes\nafter = 1\nctypes.string_at(0)")
        assert "The sandbox worker crashed (SIGSEGV)" in (cell.error or "")
        assert "variables kept from the last finished cell: before" in (cell.error or "")
        again = await sandbox.run("before + 1, 'after' in globals(), llm_query('x')")
        assert again.output == "(42, False, 'llm:x')\n"

    in_sandbox(body)


def test_an_exit_of_the_worker_is_reported_with_its_status():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        cell = await sandbox.run("import os\nos._exit(3)")
        assert "The sandbox worker exited with status 3" in (cell.error or "")
        assert (await sandbox.run("context")).output == "'the context'\n"

    in_sandbox(body)


def test_cancelling_run_stops_the_cell_and_its_sub_calls():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        host.gate = asyncio.Event()
        task = asyncio.ensure_future(sandbox.run("x = llm_query('slow')"))
        while not host.calls:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert host.cancelled == 1
        # The worker survives a cancelled cell that stopped in time, state and all.
        await sandbox.run("y = 5")
        spin = asyncio.ensure_future(sandbox.run("while True:\n    pass"))
        await asyncio.sleep(0.2)
        spin.cancel()
        with pytest.raises(asyncio.CancelledError):
            await spin
        cell = await sandbox.run("y, 'x' in globals()")
        assert cell.output == "(5, False)\n"

    in_sandbox(body)


def test_close_kills_the_worker_and_removes_its_folder():
    async def main() -> None:
        sandbox = SandboxREPL(FAST)
        await sandbox.start("c", FakeHost(), REPLSettings())
        cell = await sandbox.run("import os\nopen('notes.txt', 'w').write('x')\nos.getcwd()")
        folder = eval(cell.output)
        worker = sandbox._worker
        assert worker is not None and sandbox._workspace is not None
        keeper = sandbox._workspace.keeper
        assert keeper is not None
        pid = namespace_init(worker.process.pid)
        # The file is in the keeper's tmpfs, seen through the worker's root.
        assert os.path.exists(f"/proc/{pid}/root{folder}/notes.txt")
        assert not os.path.exists(os.path.join(folder, "notes.txt"))
        await sandbox.close()
        assert not os.path.exists(os.path.dirname(folder))
        assert worker.process.poll() is not None
        assert keeper.process.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    asyncio.run(main())


KILLED_HOST = """
import asyncio, os, signal
from deeprlm.repl.base import REPLSettings
from deeprlm.repl.sandbox import SandboxREPL, SandboxSettings

async def main():
    # Without namespaces the workspace is on the host's disk (else in the keeper's tmpfs,
    # which ends with the host).
    sandbox = SandboxREPL(SandboxSettings(namespaces=False))
    await sandbox.start("c", None, REPLSettings())
    cell = await sandbox.run("import os\\nopen('notes.txt', 'w').write('x')\\nos.getcwd()")
    print(eval(cell.output), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no finally, no finalizer, no atexit

asyncio.run(main())
"""


def test_a_workspace_left_by_a_killed_host_is_swept_by_the_next_one(tmp_path):
    host = subprocess.run(
        [sys.executable, "-c", KILLED_HOST],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert host.returncode == -signal.SIGKILL, host.stderr
    left = os.path.dirname(host.stdout.strip())
    assert os.path.exists(os.path.join(left, "work", "notes.txt"))
    unmarked = tmp_path / f"{WORKSPACE_PREFIX}unmarked"  # no lock file: not known to be ours
    unmarked.mkdir()

    live = Workspace()  # in this process's default temp folder, held by this live host
    try:
        assert sweep_abandoned(str(tmp_path)) == [left]
        assert not os.path.exists(left) and unmarked.exists()
        assert os.path.dirname(live.root) != str(tmp_path)
        assert live.root not in sweep_abandoned()  # a live host's workspace stays
        assert os.path.exists(live.work)
    finally:
        live.remove()


def test_isolation_is_reported():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        isolation = sandbox.isolation
        assert isolation is not None
        assert isolation.namespaces == ("user", "net", "pid", "ipc", "mount")
        assert isolation.landlock_abi >= 1
        assert sandbox.notes == ()
        assert "Landlock ABI" in isolation.summary()

    in_sandbox(body)


def test_missing_allowed_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        Settings(allow_read=(str(tmp_path / "nope"),))


def test_repls_run_side_by_side():
    async def main() -> list[str]:
        host = FakeHost()
        sandboxes = [SandboxREPL(FAST) for _ in range(3)]
        await asyncio.gather(
            *(s.start(f"ctx{i}", host, REPLSettings()) for i, s in enumerate(sandboxes))
        )
        try:
            cells = await asyncio.gather(*(s.run("context") for s in sandboxes))
            return [c.output for c in cells]
        finally:
            await asyncio.gather(*(s.close() for s in sandboxes))

    assert asyncio.run(main()) == ["'ctx0'\n", "'ctx1'\n", "'ctx2'\n"]
    assert threading.active_count() < 20


def test_the_cpu_limit_ends_the_worker_and_says_so():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        await sandbox.run("kept = 1")
        cell = await sandbox.run("while True:\n    pass", timeout=20)
        assert "The sandbox worker used up its CPU time (SIGXCPU)" in (cell.error or "")
        assert (await sandbox.run("kept")).output == "1\n"

    in_sandbox(body, settings=SandboxSettings(cpu_s=1, stop_grace_s=0.5))


def test_a_worker_that_breaks_the_protocol_is_replaced():
    async def body(sandbox: SandboxREPL, host: FakeHost) -> None:
        cell = await sandbox.run("import os, sys\nos.write(int(sys.argv[1]), b'\\xff' * 8)")
        assert "broke the channel's protocol" in (cell.error or "")
        assert (await sandbox.run("context")).output == "'the context'\n"

    in_sandbox(body)
