"""What the SDK-backed adapters (OpenAI-compatible, Anthropic) share (the async clients, one
request builder and one reply parser per adapter, error translation), and how every model
call is retried and bounded in time.

The openai and anthropic SDKs come from the same generator: same client shapes, same
exception names. Their own retries are off: a retry inside the SDK would wait out its
backoff while holding one of the run's concurrency slots, and past the run's deadline.
Instead one attempt's failure becomes an `LMError` saying whether another attempt may help
and how long the provider asked to wait; `call_with_retries` (used by the engine's metered
call for every kind of model) waits outside the slot, within the deadlines that bound the
call (`Deadline`), and treats an empty reply as a failure worth one more try.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import math
import os
import random
import re
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from deeprlm.errors import LMError
from deeprlm.lm import schema as schemas
from deeprlm.lm.base import Completion, LMDefaults, Message, ToolSpec
from deeprlm.textutil import clip

# The SDK's own bound on one request: a backstop for direct use of an adapter. Runs bound
# each attempt by `Settings.call_timeout_s` first.
DEFAULT_TIMEOUT_S = 600.0
# HTTP statuses with which a server refuses a request it cannot serve as asked (here: a
# `response_format` it does not support); the request is sent again without it.
_REFUSED = frozenset({400, 422})
# Statuses worth another attempt: timeouts, conflicts, rate limits, server trouble.
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))

T = TypeVar("T")
# How OpenAI and the servers that copy it (vLLM, SGLang) refuse a prompt plus reply cap
# larger than the model's window.
_WINDOW = re.compile(r"maximum context length is (\d+) tokens")


def retry_after_s(headers: Any) -> float | None:
    """Seconds a provider asked to wait: `retry-after-ms`, or `Retry-After` as seconds or
    an HTTP date. None when absent or unreadable."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
            return value if math.isfinite(value) and value >= 0 else None
        except ValueError:
            pass
    text = headers.get("retry-after")
    if text is None:
        return None
    try:
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@contextmanager
def provider_errors(sdk: ModuleType, where: str) -> Iterator[None]:
    """Turns the SDK's exceptions from one attempt into one-line `LMError`s."""
    try:
        yield
    except sdk.APIStatusError as err:
        detail = clip(" ".join(str(err.message).split()), 300)
        status = err.status_code
        wait = retry_after_s(getattr(err.response, "headers", None))
        asked = f"; the provider asked to wait {wait:g}s" if wait else ""
        hint = " (rate limited)" if status == 429 else ""
        window = _WINDOW.search(detail) if status == 400 else None
        raise LMError(
            f"{where} answered HTTP {status}{hint}{asked}: {detail}",
            transient=status in TRANSIENT_STATUSES,
            retry_after_s=wait,
            window_tokens=int(window.group(1)) if window else None,
            status=status,
        ) from None
    except sdk.APITimeoutError:
        raise LMError(
            f"{where} did not answer within the client's timeout", transient=True, timed_out=True
        ) from None
    except sdk.APIConnectionError as err:
        raise LMError(f"cannot reach {where}: {err.__cause__ or err}", transient=True) from None
    except (sdk.APIResponseValidationError, ValueError, TypeError, AttributeError) as err:
        raise LMError(
            f"{where} sent a reply that is not a valid completion: {clip(str(err), 200)}"
        ) from None


# --- deadlines and retries ------------------------------------------------------------------


class DeadlineError(LMError):
    """A call stopped because a deadline that bounds it passed (see `Deadline`)."""

    def __init__(self, deadline: Deadline, message: str) -> None:
        super().__init__(message)
        self.deadline = deadline


@dataclass(frozen=True)
class Deadline:
    """A point in time (`time.monotonic()`) a model call must end by, and what set it, for
    the error that names it. `kind` is "run" (the run's time budget), "call" (one attempt),
    "sub_call" (one sub-call with its retries) or "cell" (sub-calls end before their cell)."""

    at: float
    kind: str
    what: str  # e.g. "the call timeout of 120s (call_timeout_s)"

    @classmethod
    def after(cls, seconds: float | None, kind: str, what: str) -> Deadline | None:
        return None if seconds is None else cls(time.monotonic() + seconds, kind, what)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def error(self, model: str) -> LMError:
        if self.kind == "call":
            return LMError(
                f"model {model}: no reply within {self.what}", transient=True, timed_out=True
            )
        return DeadlineError(self, f"model {model}: stopped at {self.what}")


def earliest(*deadlines: Deadline | None) -> Deadline | None:
    present = [d for d in deadlines if d is not None]
    return min(present, key=lambda d: d.at) if present else None


async def within(awaitable: Awaitable[T], model: str, *deadlines: Deadline | None) -> T:
    """Awaits `awaitable`, stopped at the earliest deadline with that deadline's error."""
    first = earliest(*deadlines)
    if first is None:
        return await awaitable
    try:
        async with asyncio.timeout(first.remaining()) as bound:
            return await awaitable
    except TimeoutError:
        if not bound.expired():
            raise
        raise first.error(model) from None


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed attempt is retried. Delays grow 2x from `base_delay_s` (with jitter, so
    a batch does not retry in lockstep) up to `max_delay_s`, unless the provider said how
    long to wait. A timed-out attempt is retried `timeout_retries` times only: a server that
    hangs once usually hangs again."""

    max_retries: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    timeout_retries: int = 1
    # The longest Retry-After waited out when no deadline bounds the call.
    max_wait_s: float = 600.0

    def delay(self, failures: int, asked: float | None) -> float:
        if asked is not None:
            return asked
        step = self.base_delay_s * 2 ** (failures - 1)
        return min(self.max_delay_s, step) * random.uniform(0.5, 1.0)


def is_empty(completion: Completion) -> bool:
    return not completion.text.strip() and not completion.tool_calls


def empty_reply_error(model: str, completion: Completion, max_tokens: int | None) -> LMError:
    reason = completion.finish_reason
    hint = ""
    if reason in ("length", "max_tokens"):
        cap = f" of {max_tokens:,} tokens" if max_tokens else ""
        hint = f"; the reply cap{cap} ran out before any text (raise max_reply_tokens)"
    elif reason in ("content_filter", "refusal"):
        hint = "; the provider filtered the reply"
    return LMError(
        f"model {model} sent an empty reply twice (finish reason: {reason or 'none given'}){hint}"
    )


async def call_with_retries(
    attempt: Callable[[], Awaitable[Completion]],
    *,
    model: str,
    policy: RetryPolicy,
    deadline: Callable[[], Deadline | None],
    on_retry: Callable[[str, float | None], None],
    max_tokens: Callable[[], int | None] = lambda: None,
) -> Completion:
    """Runs `attempt` until it gives a usable reply. Transient failures are retried after
    a delay spent outside the attempt (so outside any concurrency slot); a wait the
    provider asks for is honoured only if it ends before `deadline()`, else the call fails
    saying so. An empty reply is retried once, then is an error naming the finish reason.
    `on_retry(message, wait_s)` hears of each retry (wait_s None for an empty reply)."""
    failures = timeouts = 0
    empty_before = False
    while True:
        try:
            completion = await attempt()
        except DeadlineError:
            raise
        except LMError as err:
            if not err.transient:
                raise
            failures += 1
            timeouts += err.timed_out
            tries = f"{failures} attempt{'s' if failures > 1 else ''}"
            if err.timed_out and timeouts > policy.timeout_retries:
                raise LMError(f"{err} ({tries})") from None
            if failures > policy.max_retries:
                raise LMError(f"{err} (gave up after {tries})") from None
            wait = policy.delay(failures, err.retry_after_s)
            bound = deadline()
            left = bound.remaining() if bound is not None else policy.max_wait_s
            if wait > left:
                if err.retry_after_s is None:
                    raise LMError(f"{err} ({tries}; no time left to retry)") from None
                until = bound.what if bound is not None else "the longest wait deeprlm allows"
                raise LMError(
                    f"model {model}: the provider asked to wait {err.retry_after_s:g}s "
                    f"before retrying, past {until} ({left:.0f}s left): {err}"
                ) from None
            on_retry(f"model {model}: {err}; retrying in {wait:.1f}s", wait)
            await asyncio.sleep(wait)
            continue
        if not is_empty(completion):
            return completion
        if empty_before:
            raise empty_reply_error(model, completion, max_tokens())
        empty_before = True
        on_retry(
            f"model {model} sent an empty reply (finish reason: "
            f"{completion.finish_reason or 'none given'}); trying once more",
            None,
        )


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context for every client in the process. Loading a CA bundle costs tens of
    milliseconds, and `RLM.run` makes fresh async clients for each run's event loop."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile is None and capath is None:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            pass
    return ssl.create_default_context(cafile=cafile, capath=capath)


class ProviderLM(LMDefaults):
    """Base of the SDK adapters. Subclasses say which client to make, how to send a
    request, how to build it from messages and how to read the reply. `acomplete` makes
    one attempt (plus `max_retries` inside the SDK, 0 unless asked)."""

    supports_tools = True
    sdk: ModuleType
    async_client: str  # the class name in the SDK, e.g. "AsyncOpenAI"

    def __init__(self, name: str, where: str, options: dict[str, Any], context_window: int | None):
        self.name = name
        self.context_window = context_window
        self._where = where
        self._options = options
        # One async client per event loop: its connection pool belongs to the loop that
        # opened it, and `RLM.run` starts a fresh loop each time.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def _make_client(self) -> Any:
        http_client = self.sdk.DefaultAsyncHttpxClient(verify=shared_ssl_context())
        return getattr(self.sdk, self.async_client)(**self._options, http_client=http_client)

    # True when the provider can be held to a JSON Schema itself (see `_request`); else the
    # schema goes into the prompt and the reply is checked and asked for again.
    native_schema = False

    def _request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None,
        max_tokens: int | None,
        schema: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The SDK request; `schema` is only ever passed when `native_schema` is true."""
        raise NotImplementedError

    def _send(self, client: Any, request: dict[str, Any]) -> Any:
        """The SDK call; returns an awaitable of the response."""
        raise NotImplementedError

    def _parse(self, response: Any, messages: Sequence[Message]) -> Completion:
        """The reply as a Completion; usage the provider left out is estimated from
        `messages` and the reply (see `reported_usage`)."""
        raise NotImplementedError

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._make_client()
            self._async_clients[loop] = client

        async def send(sent: Sequence[Message], held: Mapping[str, Any] | None) -> Completion:
            request = self._request(sent, tools, max_tokens, held)
            with provider_errors(self.sdk, self._where):
                return self._parse(await self._send(client, request), sent)

        if schema is None:
            return await send(messages, None)
        return await self._constrained(send, messages, schema)

    async def _constrained(
        self,
        send: Callable[[Sequence[Message], Mapping[str, Any] | None], Awaitable[Completion]],
        messages: Sequence[Message],
        schema: Mapping[str, Any],
    ) -> Completion:
        """A reply held to `schema`: natively where the provider can be (a refusal drops
        that for good: the server will not change its mind), else by the prompt; a reply
        that does not follow the schema is asked for again, with the problem spelled out."""
        sent: list[Message] = list(messages)
        reply: Completion | None = None
        if self.native_schema:
            try:
                reply = await send(sent, schema)
            except LMError as err:
                # A prompt too long for the window is a 400 too, and no refusal.
                if err.status not in _REFUSED or err.window_tokens is not None:
                    raise
                self.native_schema = False
        if reply is None:
            sent = schemas.with_instruction(messages, schema)
            reply = await send(sent, None)
        native = self.native_schema
        total = reply
        for _ in range(schemas.RETRIES):
            again = schemas.follow_up(sent, reply, schema)
            if again is None:
                break
            reply = await send(again, schema if native else None)
            total = schemas.merged(total, reply)
        return total
