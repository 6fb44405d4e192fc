"""The REST side of serving's one request-size limit (services/serving/limits.py), as an ASGI middleware in a
FastAPI app's stack, in front of a route that reads the whole body, as MLServer's routes do."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.serving.limits import RequestSizeLimit

LIMIT = 1_000


async def echo_length(request: Request) -> JSONResponse:
    return JSONResponse({"received": len(await request.body())})


def send(body_chunks: list[bytes], content_length: int | None) -> tuple[int, dict[str, Any]]:
    """POST the chunks through the middleware in front of a Starlette app; (status, JSON answer)."""
    # Inside the app's own middleware stack, as services/serving/patches.py adds it to MLServer's FastAPI app.
    app = FastAPI(routes=[Route("/v2/models/m/infer", echo_length, methods=["POST"])])
    app.user_middleware.append(Middleware(RequestSizeLimit, max_bytes=LIMIT))
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": headers, "query_string": b""}
    scope.update({"http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80), "root_path": ""})
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(body_chunks) - 1}
        for index, chunk in enumerate(body_chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, collect))  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, orjson.loads(body)


def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    assert send([b"x" * 600, b"y" * 400], content_length=1_000) == (200, {"received": 1_000})


def test_a_declared_length_over_the_limit_is_refused_with_413_before_the_body_is_read() -> None:
    status, answer = send([b"x" * 10], content_length=LIMIT + 1)
    assert status == 413
    assert "1001 bytes, over this server's limit of 1000 bytes" in answer["error"]
    assert "SANDBOX_SERVING_MAX_REQUEST_BYTES" in answer["error"]


def test_a_streamed_body_without_a_length_is_refused_once_it_passes_the_limit() -> None:
    status, answer = send([b"x" * 600, b"y" * 600, b"z" * 600], content_length=None)
    assert status == 413
    assert "over this server's limit of 1000 bytes" in answer["error"]


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        RequestSizeLimit(echo_length, 0)  # type: ignore[arg-type]
