"""What the serving's ASGI middlewares in front of MLServer's REST routes share: ASGI's types, and whole answers
shaped as MLServer's own (binary_rest.py, limits.py, streaming.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Send one complete HTTP response over ASGI, its Content-Length set from `body` (bytes). Header names are
    sent in lower case, as ASGI asks and as Starlette sends MLServer's (whose CloudEvents names are `Ce-Id`, ...)."""
    fields = {"content-length": str(len(body)), **{key.lower(): value for key, value in headers.items()}}
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(key.encode("latin-1"), value.encode("latin-1")) for key, value in fields.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def error(send: Send, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
    """An error answer shaped as MLServer's own: {"error": reason}, as JSON, with any extra `headers`."""
    body = orjson.dumps({"error": reason})
    await respond(send, status, body, {"content-type": "application/json", **(headers or {})})
