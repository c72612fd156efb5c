"""uvicorn's HTTP/1.1 protocol with the bounds a public server needs and uvicorn lacks:

- a connection must send a request's headers within `header_timeout_s` of opening (or of
  its previous response), so connections that send nothing, or trickle, are closed;
- a response the client does not read for `write_timeout_s` (the send buffer stays full)
  drops the connection, so a client that never reads cannot hold one forever;
- past `max_connections` open at once, a new connection is closed at once.

uvicorn keeps its own keep-alive timeout and everything else; this only adds timers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from deeprlm.serve.config import ServerSettings

log = logging.getLogger("deeprlm.serve")


def guarded_protocol(limits: ServerSettings) -> type[H11Protocol]:
    """The protocol class for uvicorn's `http=` option, with `limits`' bounds."""

    class GuardedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._write_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                log.warning("over %d connections: closing a new one", limits.max_connections)
                transport.abort()
                return
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:  # a request's headers are in
                self._cancel("_header_timer")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()  # the next request, if any, must come in time

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel("_header_timer")
            self._cancel("_write_timer")
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(limits.write_timeout_s, self._drop)

        def resume_writing(self) -> None:
            super().resume_writing()
            self._cancel("_write_timer")

        def _arm_header_timer(self) -> None:
            self._cancel("_header_timer")
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._drop)

        def _cancel(self, name: str) -> None:
            timer = getattr(self, name, None)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

        def _drop(self) -> None:
            # abort, not close: close would wait for a full send buffer to drain, forever.
            self._header_timer = self._write_timer = None
            self.transport.abort()

    return GuardedH11Protocol
