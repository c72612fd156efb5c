"""The wire between deeprlm and the embedded model's child process.

A socketpair wrapped in `multiprocessing.connection.Connection`, which frames each message
(a length, then the bytes); every message is one JSON object. No server, no port.

Child -> host, once, before anything else:
    {"op": "hello", "pid", "version", "system_info"}   llama.cpp imported, nothing loaded
Host -> child, each with an `id` the answer repeats:
    {"op": "load", "path", "settings"}                 load the GGUF (once per child)
    {"op": "open", "role"}                             make `role`'s context now
    {"op": "complete", "role", "messages", "max_tokens", "schema"}
    {"op": "cancel", "id"}                             stop request `id` (no answer)
Child -> host, one per request:
    {"id", "ok": true, ...}                            e.g. a reply's text and token counts
    {"id", "ok": false, "kind", "message"}             kind: prompt | load | schema | failed

The host sends one request at a time and waits for its answer; only `cancel` may overtake.
"""

from __future__ import annotations

import json
from multiprocessing.connection import Connection
from typing import Any

# Kinds of refusal the child reports, each a different error on the host.
PROMPT, LOAD, SCHEMA, FAILED = "prompt", "load", "schema", "failed"


def send(conn: Connection, message: dict[str, Any]) -> None:
    # surrogatepass: a context read with errors="surrogateescape" must cross intact.
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    conn.send_bytes(data.encode("utf-8", "surrogatepass"))


def receive(conn: Connection) -> dict[str, Any]:
    """The next message. EOFError when the other end has gone."""
    message = json.loads(conn.recv_bytes().decode("utf-8", "surrogatepass"))
    if not isinstance(message, dict):
        raise ValueError("a message is not a JSON object")
    return message
