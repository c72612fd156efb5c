"""Test support: a small chat server that speaks the OpenAI and Anthropic wire formats, for
the tests and for the benchmarks in benchmarks/ (which put this folder on their path).

It is a real HTTP server on 127.0.0.1 (stdlib `ThreadingHTTPServer` in a thread), so the
adapters under test go through their SDKs, sockets, retries and JSON parsing exactly as
against a provider. What it answers is up to a `responder`: a function of the request body
returning the reply text, or a `FakeReply` with a status code, a delay, tool calls, raw
bytes (garbage) or a fault to inject instead: a hang, a body sent one byte at a time, a
connection reset (before the reply or part way through its body), no usage, no choices,
null content.

Like a provider it honours the reply cap (`max_tokens` / `max_completion_tokens`: a longer
reply is cut, finish reason "length") and counts what it served in `counted`, the usage a
provider would bill, which tests compare with what deeprlm reports. It counts tokens with
the project's estimate over the request as it arrives (JSON-encoded), so its counts are
close to, not the same as, what deeprlm estimates of the same messages.
"""

from __future__ import annotations

import json
import socket
import struct
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
    # Faults
    hang: bool = False  # never answer (until the server stops)
    trickle_s: float = 0.0  # pause between the bytes of the body
    reset: bool = False  # drop the connection with a TCP reset instead of answering
    reset_after: int | None = None  # send the headers and this many body bytes, then reset
    usage: bool = True  # False: the reply carries no usage at all
    prompt_tokens: int | None = None  # the usage to report instead of the server's count
    completion_tokens: int | None = None
    no_choices: bool = False  # "choices": []
    null_content: bool = False  # "content": null
    finish_reason: str | None = None


@dataclass
class Tally:
    """What the server served: replies sent and the tokens it counted for them."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Responder = Callable[[dict[str, Any]], "FakeReply | str"]


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops a burst of concurrent connects, and the client's
    # SYN retry then costs a second: batches open dozens of connections at once.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (a deadline, a reset we made) is not news here


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
        self.counted = Tally()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, the body would wait
            # for the client's delayed ACK (~40 ms per request), which no real server has.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends a RST, as a crashing proxy would.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True

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
                if reply.hang:
                    server._stopping.wait()
                    return
                if reply.delay_s and server._stopping.wait(reply.delay_s):
                    return
                if reply.reset:
                    self._reset()
                    return
                usage: Tally | None = None
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status != 200:
                    payload = json.dumps(
                        {"error": {"message": reply.text or "failure", "type": "server_error"}}
                    ).encode()
                else:
                    anthropic = self.path.rstrip("/").endswith("/messages")
                    data, usage = _completion(body, reply, anthropic)
                    payload = json.dumps(data).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if reply.reset_after is not None:
                    self.wfile.write(payload[: reply.reset_after])
                    self.wfile.flush()
                    self._reset()
                    return
                if reply.trickle_s:
                    for i in range(len(payload)):
                        if server._stopping.wait(reply.trickle_s):
                            return
                        self.wfile.write(payload[i : i + 1])
                        self.wfile.flush()
                else:
                    self.wfile.write(payload)
                if usage is not None:
                    with server._lock:
                        server.counted.calls += 1
                        server.counted.prompt_tokens += usage.prompt_tokens
                        server.counted.completion_tokens += usage.completion_tokens

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
        self._stopping.set()  # hung and slow replies end now
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _prompt_text(body: dict[str, Any]) -> str:
    """What the fake provider tokenizes of a request: every message's content as JSON, the
    system prompt and the tool schemas."""
    parts = [json.dumps(m.get("content", "")) for m in body.get("messages", [])]
    parts += [json.dumps(body.get("system", "")), json.dumps(body.get("tools", ""))]
    return "".join(parts)


def _cap(body: dict[str, Any]) -> int | None:
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    return cap if isinstance(cap, int) else None


def _completion(
    body: dict[str, Any], reply: FakeReply, anthropic: bool
) -> tuple[dict[str, Any], Tally]:
    """The reply in the request's wire format, and the usage the server counts for it."""
    text: str | None = reply.text
    finish = reply.finish_reason
    cap = _cap(body)
    if cap is not None and text and estimate_tokens(text) > cap:
        text = _cut(text, cap)
        finish = finish or "length"
    if reply.null_content:
        text = None
    prompt = reply.prompt_tokens
    if prompt is None:
        prompt = estimate_tokens(_prompt_text(body))
    output = reply.completion_tokens
    if output is None:
        output = estimate_tokens(text or "")
        output += sum(estimate_tokens(json.dumps(args)) for _, args in reply.tool_calls)
    tally = Tally(1, prompt, output)
    if anthropic:
        return _anthropic_message(body, reply, text, finish, tally), tally
    return _openai_completion(body, reply, text, finish, tally), tally


def _cut(text: str, cap: int) -> str:
    """The longest start of `text` within `cap` tokens."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if estimate_tokens(text[:middle]) <= cap:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _openai_completion(
    body: dict[str, Any], reply: FakeReply, text: str | None, finish: str | None, tally: Tally
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(reply.tool_calls)
        ]
    data: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": []
        if reply.no_choices
        else [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish or ("tool_calls" if reply.tool_calls else "stop"),
            }
        ],
    }
    if reply.usage:
        usage: dict[str, Any] = {
            "prompt_tokens": tally.prompt_tokens,
            "completion_tokens": tally.completion_tokens,
            "total_tokens": tally.tokens,
        }
        if reply.cost_usd is not None:
            usage["cost"] = reply.cost_usd
        data["usage"] = usage
    return data


def _anthropic_message(
    body: dict[str, Any], reply: FakeReply, text: str | None, finish: str | None, tally: Tally
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for i, (name, args) in enumerate(reply.tool_calls):
        content.append({"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args})
    data: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": [] if reply.no_choices else content,
        "stop_reason": {"length": "max_tokens"}.get(finish or "", finish)
        or ("tool_use" if reply.tool_calls else "end_turn"),
        "stop_sequence": None,
    }
    if reply.usage:
        data["usage"] = {
            "input_tokens": tally.prompt_tokens,
            "output_tokens": tally.completion_tokens,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }
    return data
