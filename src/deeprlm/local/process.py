"""The host's handle on the embedded model's child process: its start, the build check, its
requests, and the one line that says how it died.

llama.cpp runs native code that can crash the process it runs in: a build for another CPU
(SIGILL), its AMX kernels (SIGSEGV), a truncated or corrupt model file, an abort when memory
runs out. In a child process such a crash costs the model's caches, not the user's run: the
request that was in flight fails with an `LMError` naming what happened, and the next one
starts a fresh child.

`ModelProcess.start` spawns `python -m deeprlm.local.worker`, reads its hello, refuses a
build that does not suit this CPU (`deeprlm.local.build`) before anything is loaded, then
loads the model. `request` sends one request and waits for its answer; a cancel set meanwhile
is passed on, and a child that does not stop within `CANCEL_GRACE_S` is killed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

import deeprlm
from deeprlm.errors import LMError
from deeprlm.local import build, protocol

START_TIMEOUT_S = 120.0  # from spawn to hello: starting Python and importing llama.cpp
CANCEL_GRACE_S = 30.0  # a cancelled request normally ends within one batch
POLL_S = 0.05  # how often a waiting host looks at its cancel flag
LAST_WORDS_CHARS = 300
# Set to 1 to run a llama.cpp build that `deeprlm.local.build` refuses (at your own risk).
SKIP_CHECK_ENV = "DEEPRLM_SKIP_BUILD_CHECK"

_TELLING = re.compile(r"error|GGML_ASSERT|abort|out of memory|corrupt", re.IGNORECASE)
_SIGNALS = {
    signal.SIGSEGV: "crashed with a segmentation fault (SIGSEGV)",
    signal.SIGBUS: "crashed (SIGBUS: the model file was truncated or changed while in use)",
    signal.SIGABRT: "aborted (SIGABRT: llama.cpp stopped on a failed check or ran out of memory)",
    signal.SIGKILL: "was killed (SIGKILL: out of memory, or by another process)",
    signal.SIGFPE: "crashed (SIGFPE)",
}


class Cancelled(Exception):
    """The request was cancelled before the child could answer it (the child was killed)."""


class ModelProcess:
    """One child process serving one GGUF file. Not thread-safe: the caller serialises."""

    def __init__(self, path: Path, settings: dict[str, Any], name: str) -> None:
        self.path = path
        self.settings = settings
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.hello: dict[str, Any] = {}
        self._log: IO[bytes] | None = None
        self._ids = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- start -------------------------------------------------------------------------

    def start(self, cancel: threading.Event | None = None) -> None:
        """Spawns the child, checks its llama.cpp build, loads the model. Raises LMError
        (and leaves no child behind) when any step fails; `Cancelled` when `cancel` is set
        meanwhile."""
        host_end, child_end = multiprocessing.Pipe(duplex=True)
        # Kept open for the child's life: the reason it gives when a load fails or it dies.
        self._log = tempfile.TemporaryFile(prefix="deeprlm-model-")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "deeprlm.local.worker", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                env=child_environment(),
                # Ctrl-C in a terminal is the host's to handle; the child ends with the host.
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            host_end.close()
            raise LMError(f"cannot start the embedded model's process: {exc}") from exc
        finally:
            child_end.close()
        self.conn = host_end
        try:
            self.hello = self._wait(None, "while starting llama.cpp", cancel, START_TIMEOUT_S)
            self._check_build()
            # A load cannot be stopped half way, and there is nothing to keep: a cancel
            # during it kills the child.
            load = {"op": "load", "path": str(self.path), "settings": self.settings}
            self._ask(load, f"while loading {self.path.name}", cancel, stoppable=False)
        except BaseException:
            self.kill()
            raise

    def _check_build(self) -> None:
        if os.environ.get(SKIP_CHECK_ENV) == "1":
            return
        verdict = build.check_build(
            str(self.hello.get("system_info", "")),
            build.read_cpu_flags(),
            fix=build.reinstall_command(
                sys.executable,
                str(self.hello.get("version") or build.LLAMA_CPP_VERSION),
                platform.machine(),
            ),
        )
        if not verdict.ok:
            raise LMError(verdict.message)

    # --- requests ------------------------------------------------------------------------

    def request(
        self, message: dict[str, Any], during: str, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """Sends one request and returns its answer. A refusal (`ok` false) is returned for
        the caller to turn into the right error, except a failed load (LMError); a crash
        raises LMError; `Cancelled` means the child was killed to honour a cancel."""
        return self._ask(message, during, cancel, stoppable=True)

    def _ask(
        self,
        message: dict[str, Any],
        during: str,
        cancel: threading.Event | None,
        *,
        stoppable: bool,
    ) -> dict[str, Any]:
        assert self.conn is not None
        self._ids += 1
        request_id = self._ids
        # A child that is gone fails the send; _wait then reads the end and says how.
        with contextlib.suppress(OSError):
            protocol.send(self.conn, {**message, "id": request_id})
        answer = self._wait(request_id, during, cancel, None, stoppable)
        if answer.get("ok") is False and answer.get("kind") == protocol.LOAD:
            # llama.cpp says why on stderr ("data is not within the file bounds", ...).
            why = self._last_words()
            raise LMError(f"{answer.get('message')}" + (f": {why}" if why else ""))
        return answer

    def _wait(
        self,
        request_id: int | None,
        during: str,
        cancel: threading.Event | None,
        timeout: float | None,
        stoppable: bool = False,
    ) -> dict[str, Any]:
        """The answer to `request_id` (None: the hello). A cancel is passed on to a
        `stoppable` request; otherwise, or when the child ignores it, `Cancelled`."""
        assert self.conn is not None
        started = time.monotonic()
        cancelled_at: float | None = None
        while True:
            if self.conn.poll(POLL_S):
                try:
                    answer = protocol.receive(self.conn)
                except (EOFError, OSError, ValueError):
                    raise self._died(during) from None
                if answer.get("id") == request_id:
                    return answer
                continue  # an answer to a request given up on earlier
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                if not stoppable:
                    raise Cancelled
                if cancelled_at is None:
                    cancelled_at = now
                    with contextlib.suppress(OSError):
                        protocol.send(self.conn, {"op": "cancel", "id": request_id})
                elif now - cancelled_at > CANCEL_GRACE_S:
                    raise Cancelled
            if timeout is not None and now - started > timeout:
                last_words = self._last_words()
                self.kill()
                raise LMError(
                    f"the embedded model's process did not start within {timeout:g}s"
                    + (f"; its last words: {last_words}" if last_words else "")
                )

    # --- the end -------------------------------------------------------------------------

    def _died(self, during: str) -> LMError:
        """The one line for a child that ended while a request was in flight."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        last_words = self._last_words()
        self.kill()
        return LMError(
            f"the embedded model's process {describe_exit(code)} {during} ({self.name}); "
            "the next call starts it again"
            + (f"; its last words: {last_words}" if last_words else "")
        )

    def _last_words(self) -> str:
        """The child's last word on stderr: its last line naming an error or a failed
        check (llama.cpp's reason for a failed load or an abort), else its last line."""
        if self._log is None or self._log.closed:
            return ""
        try:
            size = self._log.seek(0, os.SEEK_END)
            self._log.seek(max(0, size - 8192))
            lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        lines = [" ".join(line.split()) for line in lines if line.strip()]
        if not lines:
            return ""
        telling = [line for line in lines if _TELLING.search(line)]
        line = (telling or lines)[-1]
        if len(line) > LAST_WORDS_CHARS:
            line = line[: LAST_WORDS_CHARS - 3] + "..."
        return line

    def close(self) -> None:
        """Ends the child: closing its connection makes it exit at once."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.process is not None:
            try:
                self.process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5.0)
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._log is not None:
            self._log.close()
            self._log = None


def describe_exit(code: int | None) -> str:
    """How a child ended, as the middle of a sentence: "the process ... while loading"."""
    if code is None:
        return "stopped answering"
    if code >= 0:
        return f"exited with status {code}"
    signum = -code
    if signum == signal.SIGILL:
        return (
            "stopped on an illegal instruction (SIGILL: the llama.cpp build uses instructions "
            f"this CPU lacks; reinstall it portably: {build.reinstall_command(sys.executable)})"
        )
    try:
        known = signal.Signals(signum)
    except ValueError:
        return f"was ended by signal {signum}"
    return _SIGNALS.get(known, f"was ended by {known.name}")


def child_environment() -> dict[str, str]:
    """The user's environment, plus the folder deeprlm was imported from, so that the child
    imports the same deeprlm however the host found it (installed, or a source tree)."""
    env = dict(os.environ)
    root = str(Path(deeprlm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
