"""Shared helpers for the test suite: building scripted replies, reading what the model was
shown, and a fake chat server."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator

import pytest

from fake_server import FakeChatServer, Responder


def repl(code: str, prose: str = "Let me look.") -> str:
    """A model reply holding one ```repl block."""
    return f"{prose}\n```repl\n{code.strip()}\n```"


_OUTPUT = re.compile(
    r"^Output(?: of block \d+)?:\n(.*?)(?=\n\nOutput|\n\nNote: |\n\n\(\d+ turns? left|\Z)",
    re.DOTALL | re.MULTILINE,
)


def outputs(message: str) -> list[str]:
    """The output of each block, as a turn's message showed it to the model."""
    return _OUTPUT.findall(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("llama_cpp") is not None:
        return
    skip = pytest.mark.skip(reason="needs the local extra: pip install 'deeprlm[local]'")
    for item in items:
        if "local_extra" in item.keywords:
            item.add_marker(skip)


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
