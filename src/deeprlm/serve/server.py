"""Running an ASGI app on uvicorn with the server's bounds: on a socket bound here (so port 0
gives a free port whose number is known before the first request), with the guarded
protocol (`deeprlm.serve.protocol`), in the foreground (`run`) or on a thread of its own
(`ServerThread`, for embedding and for tests and benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from deeprlm.errors import InputError
from deeprlm.serve.config import ServerSettings
from deeprlm.serve.protocol import guarded_protocol

# A keep-alive connection with no new request for this long is closed (uvicorn's timer).
KEEP_ALIVE_S = 5


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as err:
        raise InputError(f"cannot listen on {host}: {err}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    return f"http://{shown}:{port}"


def raise_open_files_limit() -> None:
    """Each connection is a file descriptor: take what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_ready()


def _config(app: Any, limits: ServerSettings, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=5,
        backlog=min(4096, limits.max_connections),
    )


def run(
    app: Any,
    limits: ServerSettings,
    *,
    on_ready: Callable[[str], None],
    log_level: str = "warning",
    after: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serves `app` until interrupted; `on_ready(url)` once it accepts connections, and
    `after()` on the same event loop once it has stopped."""
    raise_open_files_limit()
    sock = bind(limits.host, limits.port)
    url = url_of(sock)
    server = _Server(_config(app, limits, log_level), lambda: on_ready(url))

    async def main() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            if after is not None:
                await after()

    asyncio.run(main())


class ServerThread:
    """The server on a thread with its own event loop: `start()` returns once it accepts
    connections; `stop()` shuts it down and waits."""

    def __init__(self, app: Any, limits: ServerSettings, log_level: str = "warning") -> None:
        self._sock = bind(limits.host, limits.port)
        self.url = url_of(self._sock)
        self._ready = threading.Event()
        self._server = _Server(_config(app, limits, log_level), self._ready.set)
        self._thread = threading.Thread(target=self._run, name="deeprlm-serve", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as err:  # reported by start()
            self._error = err
            self._ready.set()

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise RuntimeError(f"the server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
