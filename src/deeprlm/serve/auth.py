"""Who may talk to a server, and whose contexts and runs a request may see.

The rule: a server on a loopback address may run without keys (only this machine reaches
it); on any other address it needs at least one API key. A request then presents one as
`Authorization: Bearer KEY`, compared with every configured key in constant time, and owns
what it makes under that key's owner id (a digest, so the key itself is kept nowhere else).
Without keys everyone is the same owner, "".
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
from typing import Any

from deeprlm.errors import InputError
from deeprlm.serve.config import API_KEY_ENV
from deeprlm.serve.errors import ApiError


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address. A name is resolved;
    one that does not resolve counts as not loopback."""
    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses
    )


def needs_key(host: str) -> bool:
    """The rule: anything but loopback needs an API key."""
    return not is_loopback(host)


def check_bind(host: str, keys: tuple[str, ...]) -> None:
    """Refuses to serve an address other machines may reach without a key."""
    if needs_key(host) and not keys:
        raise InputError(
            f"--host {host} is reachable from other machines: give an API key "
            f"({API_KEY_ENV}=KEY, --api-key KEY or api_keys in the config file)"
        )


def owner_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class KeyRing:
    """The server's API keys, and the owner a request's credentials make it."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = [(k.encode(), owner_id(k)) for k in keys]

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def owner(self, authorization: str | None) -> str:
        """The owner id for an `Authorization` header; raises a 401 ApiError when keys are
        required and it holds none of them."""
        if not self._keys:
            return ""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "missing API key: send it as 'Authorization: Bearer KEY'",
                code="missing_api_key",
            )
        given = token.strip().encode()
        found = ""
        # Every key is compared, whatever matched, so the time taken says nothing about
        # which key (or how much of one) was right.
        for key, owner in self._keys:
            if hmac.compare_digest(given, key):
                found = owner
        if not found:
            raise ApiError(401, "invalid API key", code="invalid_api_key")
        return found


class KeyGuard:
    """ASGI middleware that turns away HTTP requests without a valid key (401), for an app
    that does not check keys itself (the MCP server's)."""

    def __init__(self, app: Any, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.keys.required:
            headers = dict(scope.get("headers") or [])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            try:
                self.keys.owner(authorization)
            except ApiError as err:
                body = json.dumps(err.body()).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": err.status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
