"""Test support for sessions: a fake server's responder that plays each question's root turns
from a script, and a driver for the `deeprlm` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fake_server import FakeReply

Reply = str | FakeReply | Callable[[dict[str, Any]], "str | FakeReply"]


def query_of(body: dict[str, Any]) -> str | None:
    """The question a root conversation answers (its first user message's 'Query:' line);
    None for a sub-call."""
    messages = body.get("messages", [])
    if not messages or messages[0].get("role") != "system":
        return None
    first = str(messages[1].get("content") or "")
    line = first.split("\n", 1)[0]
    return line.removeprefix("Query: ") if line.startswith("Query: ") else None


class QuestionScript:
    """Replies to each question's root turns in order (the last one repeated): the turn is
    how many replies the conversation already holds. Sub-calls get `sub(prompt)`. Every
    root request is kept, by question, in `requests`."""

    def __init__(
        self,
        turns: Mapping[str, Sequence[Reply]],
        sub: Callable[[str], str] = lambda prompt: f"sub:{prompt[:40]}",
    ) -> None:
        self.turns = dict(turns)
        self.sub = sub
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str | FakeReply:
        query = query_of(body)
        if query is None:
            return self.sub(str(body["messages"][-1].get("content") or ""))
        with self._lock:
            self.requests.setdefault(query, []).append(body)
        replies = self.turns[query]
        turn = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        reply = replies[min(turn, len(replies) - 1)]
        return reply(body) if callable(reply) else reply

    def first_prompt(self, query: str) -> str:
        """Everything the root was shown on the question's first turn."""
        return "\n".join(str(m.get("content")) for m in self.requests[query][0]["messages"])


def deeprlm(
    *args: str,
    home: os.PathLike[str] | str,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """The `deeprlm` command in a new process, with its own DEEPRLM_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    env["DEEPRLM_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "deeprlm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
