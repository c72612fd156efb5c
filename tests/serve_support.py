"""Test support for `deeprlm serve` and `deeprlm mcp`: a scripted upstream model, the server
on a thread or as a real process, and reading a process tree from /proc."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from deeprlm.serve.auth import KeyRing
from deeprlm.serve.config import build_config
from deeprlm.serve.http_app import create_app
from deeprlm.serve.server import ServerThread
from deeprlm.serve.service import Service

from conftest import repl
from fake_server import FakeReply, last_user_text

# The root's first turn: look at the context, make one sub-call; its second: answer with
# what it saw. The answer shows which context the run had.
FIRST_TURN = repl(
    "seen = context if isinstance(context, str) else ' | '.join(sorted(context))\n"
    "print(llm_query('say ok'))"
)


def is_root(body: Mapping[str, Any]) -> bool:
    return body["messages"][0]["role"] == "system"


def scripted(
    first: str = FIRST_TURN,
    *,
    answer: str = 'FINAL_VAR("seen")',
    delay_s: float = 0.0,
    on_second: Callable[[Mapping[str, Any]], FakeReply | str] | None = None,
) -> Callable[[dict[str, Any]], FakeReply | str]:
    """A responder: `first` for the root's first turn, `answer` after; sub-calls say ok."""

    def responder(body: dict[str, Any]) -> FakeReply | str:
        if not is_root(body):
            return FakeReply("ok", delay_s=delay_s)
        if "Query:" in last_user_text(body):
            return FakeReply(first, delay_s=delay_s)
        if on_second is not None:
            return on_second(body)
        return FakeReply(answer, delay_s=delay_s)

    return responder


@contextmanager
def served(
    upstream_url: str,
    *,
    server: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    keys: tuple[str, ...] = (),
    models: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[ServerThread]:
    """`deeprlm serve`'s app on a thread, on a free 127.0.0.1 port, with the model setup
    "deeprlm" (root openai/root at `upstream_url`) and any more `models`."""
    data = {"models": {name: dict(table) for name, table in (models or {}).items()}}
    config = build_config(
        data,
        server_flags={"port": 0, **(server or {})},
        cli_setup={"name": "deeprlm", "model": "openai/root", "base_url": upstream_url},
        setting_flags=dict(settings or {}),
        api_keys=keys,
        environ={},
    )
    service = Service(config, force_sandbox=True)
    thread = ServerThread(create_app(service, KeyRing(config.api_keys)), config.server)
    with thread:
        thread.service = service  # type: ignore[attr-defined]
        yield thread


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI", "ANTHROPIC", "DEEPRLM_API_KEY"))
    }
    env.update(extra)
    return env


@contextmanager
def serve_process(
    *args: str, env: Mapping[str, str] | None = None, command: str = "serve"
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`deeprlm serve ARGS --port 0` (or another `command`) as a real process; yields it
    and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "deeprlm", command, "--port", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env or clean_env()),
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"listening on (http://\S+)", line)
        rest = process.stderr.read() if process.poll() is not None else ""
        assert found, f"the server did not start: {line}{rest}"
        yield process, found.group(1)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":  # exited, not yet reaped: not running anything
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(check: Callable[[], Any], timeout_s: float = 20.0, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {check}")
        time.sleep(every_s)
