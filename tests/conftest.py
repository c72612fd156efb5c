"""Shared helpers for the test suite: building scripted replies and a fake chat server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fake_server import FakeChatServer, Responder


def repl(code: str, prose: str = "Let me look.") -> str:
    """A model reply holding one ```repl block."""
    return f"{prose}\n```repl\n{code.strip()}\n```"


@pytest.fixture
def chat_server() -> Iterator[type[FakeChatServer]]:
    """Starts fake chat servers on 127.0.0.1 and stops them after the test."""
    started: list[FakeChatServer] = []

    def start(responder: Responder, **kwargs: object) -> FakeChatServer:
        server = FakeChatServer(responder, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in started:
        server.stop()
