"""Shared helpers for the test suite: building scripted replies, reading what the model was
shown, a fake chat server, the CLI as a process, and reading concurrency off a trace."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from deeprlm.trace.events import Event, LMCallEnded, LMCallStarted

from fake_server import FakeChatServer, Responder


def repl(code: str, prose: str = "Let me look.") -> str:
    """A model reply holding one ```repl block."""
    return f"{prose}\n```repl\n{code.strip()}\n```"


_OUTPUT = re.compile(
    r"^Output(?: of block \d+)?:\n(.*?)(?=\n\nOutput|\n\nNote: |\n\n\(\d+ turns? left|\Z)",
    re.DOTALL | re.MULTILINE,
)


def ctrl_c_works() -> None:
    """For a child process that a test stops with Ctrl-C (SIGINT): a suite started in the
    background of a script has SIGINT ignored, and a child inherits that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def deeprlm(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`deeprlm ARGS` in a fresh process, as a user runs it, without provider keys."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "deeprlm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def peak_in_flight(events: list[Event], purpose: str) -> int:
    """The most model calls of `purpose` running at once, from the order of trace events."""
    running = peak = 0
    for event in events:
        if isinstance(event, LMCallStarted) and event.purpose == purpose:
            running += 1
            peak = max(peak, running)
        elif isinstance(event, LMCallEnded) and event.purpose == purpose:
            running -= 1
    return peak


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray cluster for the whole session, sized for a shared 2-core machine: 8
    CPUs of bookkeeping (tasks wait on models, not on cores) and a small object store. It
    listens on 127.0.0.1 only. Yields its address, for drivers in other processes."""
    from deeprlm.batch.ray_executor import LOCAL_ONLY_ENV

    os.environ[LOCAL_ONLY_ENV] = "0"  # read when ray is imported
    import ray

    # Ray's socket paths must stay short: a folder of its own right under /tmp.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(
        num_cpus=8,
        object_store_memory=100 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        _temp_dir=temp,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
