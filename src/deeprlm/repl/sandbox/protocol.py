"""The wire between the host and a sandbox worker: length-prefixed JSON frames.

Each frame is a 4-byte big-endian length and a JSON object with an `op`. JSON, never
pickle, for anything the worker sends: the worker runs code the host does not trust, and
unpickling its bytes would run that code in the host. (The context travels the other way,
host to worker, once, outside this channel.)

Host -> worker: `config`, `run`, `reply`, `interrupt`.
Worker -> host: `ready`, `call`, `cell`.
"""

from __future__ import annotations

import builtins
import json
import socket
import struct
import threading
from typing import Any

from deeprlm import errors

HEADER = struct.Struct("!I")
# A frame larger than this is a broken or hostile worker, not a big request: 32 MiB holds a
# batch of 32 prompts of a million characters each. Bigger work is split into more calls.
MAX_FRAME = 32 << 20
# Lists and objects nested deeper than this are refused when a frame is read: no request
# needs more, and deep values break whatever recurses over them (repr, the trace's JSON).
MAX_DEPTH = 64


class ProtocolError(Exception):
    """A frame that is not what the protocol allows."""


def encode(message: dict[str, Any], default: Any = None) -> bytes:
    """One frame. Raises ValueError for what the other end would refuse: a message over
    the size or nesting limit."""
    if not within_depth(message, MAX_DEPTH):
        raise ValueError(f"a value is nested deeper than the sandbox's {MAX_DEPTH} levels")
    # surrogatepass: texts read with errors="surrogateescape" must cross intact.
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=default)
    body = data.encode("utf-8", "surrogatepass")
    if len(body) > MAX_FRAME:
        raise ValueError(
            f"a message of {len(body):,} bytes is over the sandbox's limit of "
            f"{MAX_FRAME >> 20} MiB per message: send less per call"
        )
    return HEADER.pack(len(body)) + body


def decode(body: bytes | bytearray) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8", "surrogatepass"))
    except ValueError as exc:
        raise ProtocolError(f"a frame is not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"a frame is nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("a frame has no op")
    if not within_depth(message, MAX_DEPTH):
        raise ProtocolError(f"a frame is nested deeper than {MAX_DEPTH} levels")
    return message


def within_depth(value: Any, limit: int) -> bool:
    """Whether no list or object in `value` lies more than `limit` levels deep. Iterative:
    the point is to refuse what recursion cannot handle."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def frame_length(header: bytes | bytearray) -> int:
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame of {length:,} bytes is over the limit")
    return length


async def read_frame(reader: Any) -> tuple[dict[str, Any], int]:
    """Reads one frame from an asyncio StreamReader (host side): the message and its size
    in bytes."""
    length = frame_length(await reader.readexactly(HEADER.size))
    return decode(await reader.readexactly(length)), length


class SyncChannel:
    """The worker's end: blocking reads from one thread, writes from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any], default: Any = None) -> None:
        data = encode(message, default)
        with self._send_lock:
            self.sock.sendall(data)

    def receive(self) -> dict[str, Any] | None:
        """The next frame, or None when the host has gone."""
        header = self._read_exactly(HEADER.size)
        if header is None:
            return None
        body = self._read_exactly(frame_length(header))
        if body is None:
            return None
        return decode(body)

    def _read_exactly(self, n: int) -> bytearray | None:
        buffer = bytearray(n)
        view = memoryview(buffer)
        got = 0
        while got < n:
            count = self.sock.recv_into(view[got:])
            if count == 0:
                return None
            got += count
        return buffer


# --- exceptions across the wire -----------------------------------------------------------


def error_payload(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def rebuild_error(payload: Any) -> Exception:
    """The worker's copy of an exception the host raised: the same class where it is a
    builtin or a deeprlm error (so the model reads the same traceback as in process),
    else a RuntimeError naming the original."""
    if not isinstance(payload, dict):
        return RuntimeError(str(payload))
    name = str(payload.get("type", "Exception"))
    message = str(payload.get("message", ""))
    cls = getattr(errors, name, None) or getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return RuntimeError(f"{name}: {message}")
