"""The embedded model's child process: `python -P -m deeprlm.local.worker FD`.

It imports llama.cpp, says hello with the build's features (the host checks them against
the CPU before anything is loaded), then serves requests over the connection on FD (see
`deeprlm.local.protocol`): the main thread runs llama.cpp, a reader thread takes the
frames, queues the requests and turns a `cancel` into the flag the running call checks
between batches and tokens. When the host goes away (its end closes, however it died),
the reader ends the process.

`python -m deeprlm.local.worker --probe` prints the hello as JSON and exits: how
`deeprlm doctor` asks a build about itself without risking its own process.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from deeprlm.local import protocol


def hello() -> dict[str, Any]:
    import llama_cpp  # may stop the process: a build for another CPU, a missing library

    from deeprlm.local.runtime import system_info

    return {
        "op": "hello",
        "pid": os.getpid(),
        "version": llama_cpp.__version__,
        "system_info": system_info(),
    }


class Worker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self.runtime: Any = None
        self._lock = threading.Lock()
        self._current: Any = None
        self._cancel = threading.Event()
        self._cancelled: Any = None  # a cancel that arrived before its request started

    def read_forever(self) -> None:
        while True:
            try:
                message = protocol.receive(self.conn)
            except Exception:
                # The host is gone (or broke the protocol): nobody is left to answer to.
                os._exit(0)
            if message.get("op") == "cancel":
                with self._lock:
                    if message.get("id") == self._current:
                        self._cancel.set()
                    else:
                        self._cancelled = message.get("id")
            else:
                self.requests.put(message)

    def serve_forever(self) -> None:
        while True:
            message = self.requests.get()
            with self._lock:
                self._current = message.get("id")
                self._cancel = threading.Event()
                if self._cancelled == self._current:
                    self._cancel.set()
            answer = self.handle(message, self._cancel)
            protocol.send(self.conn, {"id": message.get("id"), **answer})

    def handle(self, message: dict[str, Any], cancel: threading.Event) -> dict[str, Any]:
        from deeprlm.local import runtime

        op = message.get("op")
        try:
            if op == "load":
                if self.runtime is None:
                    settings = runtime.Settings(**message["settings"])
                    self.runtime = runtime.Runtime(str(message["path"]), settings)
                return {"ok": True}
            if self.runtime is None:
                return _refusal(protocol.FAILED, "no model is loaded")
            if op == "open":
                self.runtime.context(str(message["role"]))
                return {"ok": True}
            if op == "complete":
                reply = self.runtime.complete(
                    str(message["role"]),
                    message["messages"],
                    max_tokens=message.get("max_tokens"),
                    schema=message.get("schema"),
                    cancel=cancel,
                )
                return {"ok": True, **reply.__dict__}
            return _refusal(protocol.FAILED, f"unknown request {op!r}")
        except runtime.PromptTooLong as exc:
            return _refusal(protocol.PROMPT, str(exc))
        except runtime.LoadFailed as exc:
            return _refusal(protocol.LOAD, str(exc))
        except runtime.BadSchema as exc:
            return _refusal(protocol.SCHEMA, str(exc))
        except Exception as exc:
            return _refusal(protocol.FAILED, f"{type(exc).__name__}: {exc}")


def _refusal(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "message": message}


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        print(json.dumps(hello()))
        return 0
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m deeprlm.local.worker FD | --probe", file=sys.stderr)
        return 2
    conn = Connection(int(argv[0]))
    protocol.send(conn, hello())
    from deeprlm.local.runtime import quiet_logs

    quiet_logs()
    worker = Worker(conn)
    threading.Thread(target=worker.read_forever, name="deeprlm-model-reader", daemon=True).start()
    worker.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
