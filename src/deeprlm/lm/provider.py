"""What the SDK-backed adapters (OpenAI-compatible, Anthropic) share: clients, the sync and
async twins over one request builder and one reply parser, and error translation.

The openai and anthropic SDKs come from the same generator: same client shapes, same
exception names, and both retry 429s, 5xx and timeouts with backoff themselves. What reaches
`provider_errors` has already been retried and becomes one clear `LMError` line.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import weakref
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from deeprlm.errors import LMError
from deeprlm.lm import schema as schemas
from deeprlm.lm.base import Completion, Message, ToolSpec
from deeprlm.textutil import clip

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_RETRIES = 5
# HTTP statuses with which a server refuses a request it cannot serve as asked (here: a
# `response_format` it does not support); the request is sent again without it.
_REFUSED = frozenset({400, 422})

# One exchange of the attempt loop: the request to send next; the reply (or the error) to it.
Attempts = Generator[dict[str, Any], tuple[Completion | None, LMError | None], Completion]


@contextmanager
def provider_errors(sdk: ModuleType, where: str) -> Iterator[None]:
    try:
        yield
    except sdk.APIStatusError as err:
        detail = clip(" ".join(str(err.message).split()), 300)
        hint = " (rate limited; retries exhausted)" if err.status_code == 429 else ""
        raise LMError(
            f"{where} answered HTTP {err.status_code}{hint}: {detail}", status=err.status_code
        ) from None
    except sdk.APITimeoutError:
        raise LMError(f"{where} did not answer in time (after retries)") from None
    except sdk.APIConnectionError as err:
        raise LMError(f"cannot reach {where}: {err.__cause__ or err}") from None
    except (sdk.APIResponseValidationError, ValueError, TypeError, AttributeError) as err:
        raise LMError(
            f"{where} sent a reply that is not a valid completion: {clip(str(err), 200)}"
        ) from None


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


class ProviderLM:
    """Base of the SDK adapters. Subclasses say which clients to make, how to send a
    request, how to build it from messages and how to read the reply."""

    supports_tools = True
    sdk: ModuleType
    sync_client: str  # class names in the SDK, e.g. "OpenAI" / "AsyncOpenAI"
    async_client: str

    def __init__(self, name: str, where: str, options: dict[str, Any], context_window: int | None):
        self.name = name
        self.context_window = context_window
        self._where = where
        self._options = options
        self._client: Any = None
        # One async client per event loop: its connection pool belongs to the loop that
        # opened it, and `RLM.run` starts a fresh loop each time.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def _make_client(self, kind: str, http_kind: str) -> Any:
        http_client = getattr(self.sdk, http_kind)(verify=shared_ssl_context())
        return getattr(self.sdk, kind)(**self._options, http_client=http_client)

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
        """The SDK call; returns the response (sync client) or an awaitable (async)."""
        raise NotImplementedError

    def _parse(self, response: Any) -> Completion:
        raise NotImplementedError

    def _attempts(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None,
        max_tokens: int | None,
        schema: Mapping[str, Any] | None,
    ) -> Attempts:
        """The requests of one call, shared by the sync and async twins: one, unless a
        schema is asked for. Then a refused `response_format` is dropped (for good: the
        server will not change its mind) and a reply that does not follow the schema is
        asked for again, with the problem spelled out."""
        native = schema is not None and self.native_schema
        sent = (
            list(messages)
            if native or schema is None
            else schemas.with_instruction(messages, schema)
        )
        reply, error = yield self._request(sent, tools, max_tokens, schema if native else None)
        if error is not None and native and error.status in _REFUSED:
            assert schema is not None
            self.native_schema = False
            native = False
            sent = schemas.with_instruction(messages, schema)
            reply, error = yield self._request(sent, tools, max_tokens)
        if error is not None:
            raise error
        assert reply is not None
        if schema is None:
            return reply
        total = reply
        for _ in range(schemas.RETRIES):
            again = schemas.follow_up(sent, reply, schema)
            if again is None:
                break
            reply, error = yield self._request(again, tools, max_tokens, schema if native else None)
            if error is not None:
                raise error
            assert reply is not None
            total = schemas.merged(total, reply)
        return total

    def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        if self._client is None:
            self._client = self._make_client(self.sync_client, "DefaultHttpxClient")
        attempts = self._attempts(messages, tools, max_tokens, schema)
        request = next(attempts)
        while True:
            try:
                with provider_errors(self.sdk, self._where):
                    outcome: tuple[Completion | None, LMError | None] = (
                        self._parse(self._send(self._client, request)),
                        None,
                    )
            except LMError as err:
                outcome = (None, err)
            try:
                request = attempts.send(outcome)
            except StopIteration as done:
                return done.value

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
            client = self._make_client(self.async_client, "DefaultAsyncHttpxClient")
            self._async_clients[loop] = client
        attempts = self._attempts(messages, tools, max_tokens, schema)
        request = next(attempts)
        while True:
            try:
                with provider_errors(self.sdk, self._where):
                    outcome: tuple[Completion | None, LMError | None] = (
                        self._parse(await self._send(client, request)),
                        None,
                    )
            except LMError as err:
                outcome = (None, err)
            try:
                request = attempts.send(outcome)
            except StopIteration as done:
                return done.value
