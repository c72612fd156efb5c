"""What the SDK-backed adapters (OpenAI-compatible, Anthropic) share: the async clients, one
request builder and one reply parser per adapter, and error translation.

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from deeprlm.errors import LMError
from deeprlm.lm import schema as schemas
from deeprlm.lm.base import Completion, LMDefaults, Message, ToolSpec
from deeprlm.textutil import clip

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_RETRIES = 5
# HTTP statuses with which a server refuses a request it cannot serve as asked (here: a
# `response_format` it does not support); the request is sent again without it.
_REFUSED = frozenset({400, 422})


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


class ProviderLM(LMDefaults):
    """Base of the SDK adapters. Subclasses say which client to make, how to send a
    request, how to build it from messages and how to read the reply."""

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

    def _parse(self, response: Any) -> Completion:
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

        async def send(request: dict[str, Any]) -> Completion:
            with provider_errors(self.sdk, self._where):
                return self._parse(await self._send(client, request))

        if schema is None:
            return await send(self._request(messages, tools, max_tokens))
        return await self._constrained(send, messages, tools, max_tokens, schema)

    async def _constrained(
        self,
        send: Any,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None,
        max_tokens: int | None,
        schema: Mapping[str, Any],
    ) -> Completion:
        """A reply held to `schema`: natively where the provider can be (a refusal drops
        that for good: the server will not change its mind), else by the prompt; a reply
        that does not follow the schema is asked for again, with the problem spelled out."""
        sent: list[Message] = list(messages)
        reply: Completion | None = None
        if self.native_schema:
            try:
                reply = await send(self._request(sent, tools, max_tokens, schema))
            except LMError as err:
                if err.status not in _REFUSED:
                    raise
                self.native_schema = False
        if reply is None:
            sent = schemas.with_instruction(messages, schema)
            reply = await send(self._request(sent, tools, max_tokens))
        native = self.native_schema
        total = reply
        for _ in range(schemas.RETRIES):
            again = schemas.follow_up(sent, reply, schema)
            if again is None:
                break
            reply = await send(self._request(again, tools, max_tokens, schema if native else None))
            total = schemas.merged(total, reply)
        return total
