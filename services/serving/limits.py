"""One request-size limit for both protocols: the REST side.

gRPC refuses a message over MLServer's `grpc_max_message_length` (RESOURCE_EXHAUSTED); MLServer's REST server
(uvicorn) reads a body of any size. This ASGI middleware, which services/serving/patches.py puts in front of
MLServer's REST routes, answers a body over the same number of bytes with 413, so a batch either protocol
serves is within one limit (SANDBOX_SERVING_MAX_REQUEST_BYTES). A V2 request carries the same tensors in
fewer bytes over gRPC (4 bytes per FP32 value) than as JSON text, so what REST serves, gRPC serves too.
"""

from __future__ import annotations

from services.serving.asgi import ASGIApp, Message, Receive, Scope, Send, error

TOO_LARGE = 413


def too_large_message(size: int | str, max_bytes: int) -> str:
    return (
        f"the request body is {size} bytes, over this server's limit of {max_bytes} bytes "
        "(SANDBOX_SERVING_MAX_REQUEST_BYTES): send a smaller batch"
    )


class RequestSizeLimit:
    """ASGI middleware: HTTP requests whose body exceeds `max_bytes` (bytes) are answered 413, before the body
    is read when Content-Length says so, else as soon as the streamed body passes the limit. Both answers are
    MLServer's error body, `{"error": reason}`. Other requests pass untouched.

    Raises ValueError at construction when `max_bytes` is not positive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await refuse(send, too_large_message(int(declared), self.max_bytes))
            return
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:  # an app that answered before reading its whole body: nothing left to say
                return
            await refuse(send, too_large_message(f"more than {self.max_bytes}", self.max_bytes))


class BodyTooLarge(Exception):
    """Raised from `receive` inside the app when the streamed body passes the limit; RequestSizeLimit answers it."""


async def refuse(send: Send, reason: str) -> None:
    """Answer 413 with MLServer's error body, `{"error": reason}`, and close the connection (the body is unread)."""
    await error(send, TOO_LARGE, reason, {"connection": "close"})
