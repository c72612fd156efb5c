"""Test support: a small chat server that speaks the OpenAI and Anthropic wire formats, for
the tests and for the benchmarks in benchmarks/ (which put this folder on their path).

It is a real HTTP server on 127.0.0.1 (stdlib `ThreadingHTTPServer` in a thread), so the
adapters under test go through their SDKs, sockets, retries and JSON parsing exactly as
against a provider. What it answers is up to a `responder`: a function of the request body
returning the reply text, or a `FakeReply` with a status code, a delay, tool calls or raw
bytes (garbage) to send instead.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from deeprlm.textutil import estimate_tokens


@dataclass(frozen=True)
class FakeReply:
    text: str = ""
    status: int = 200
    delay_s: float = 0.0
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()  # (name, arguments)
    raw: bytes | None = None  # sent as the body instead of a completion
    headers: dict[str, str] = field(default_factory=dict)
    cost_usd: float | None = None


Responder = Callable[[dict[str, Any]], "FakeReply | str"]


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops a burst of concurrent connects, and the client's
    # SYN retry then costs a second: batches open dozens of connections at once.
    request_queue_size = 1024


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the newest user message, in either wire format."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            return "".join(
                block.get("text") or str(block.get("content", ""))
                for block in content
                if isinstance(block, dict)
            )
        return str(content or "")
    return ""


class FakeChatServer:
    def __init__(self, responder: Responder, *, record: bool = True) -> None:
        self.responder = responder
        self.record = record
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, the body would wait
            # for the client's delayed ACK (~40 ms per request), which no real server has.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if server.record:
                    with server._lock:
                        server.requests.append(body)
                try:
                    reply = server.responder(body)
                except Exception as err:  # a broken responder is a 500, as in real life
                    reply = FakeReply(status=500, text=f"{type(err).__name__}: {err}")
                if isinstance(reply, str):
                    reply = FakeReply(text=reply)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status != 200:
                    payload = json.dumps(
                        {"error": {"message": reply.text or "failure", "type": "server_error"}}
                    ).encode()
                elif self.path.rstrip("/").endswith("/messages"):
                    payload = json.dumps(_anthropic_message(body, reply)).encode()
                else:
                    payload = json.dumps(_openai_completion(body, reply)).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _prompt_text(body: dict[str, Any]) -> str:
    return "".join(json.dumps(m.get("content", "")) for m in body.get("messages", []))


def _openai_completion(body: dict[str, Any], reply: FakeReply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(reply.tool_calls)
        ]
    usage: dict[str, Any] = {
        "prompt_tokens": estimate_tokens(_prompt_text(body)),
        "completion_tokens": estimate_tokens(reply.text),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if reply.cost_usd is not None:
        usage["cost"] = reply.cost_usd
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": usage,
    }


def _anthropic_message(body: dict[str, Any], reply: FakeReply) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    for i, (name, args) in enumerate(reply.tool_calls):
        content.append({"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args})
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": content,
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": estimate_tokens(_prompt_text(body)),
            "output_tokens": estimate_tokens(reply.text),
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }
