"""MLServer's streaming routes refused for models that do not stream (services/serving/streaming.py), as an
ASGI middleware in a FastAPI app's stack, as services/serving/patches.py adds it to MLServer's app."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from services.serving.streaming import StreamingRoutesRefused


async def answered(request: Request) -> JSONResponse:
    return JSONResponse({"route": request.url.path})


def post(path: str) -> tuple[int, dict[str, Any]]:
    routes: list[BaseRoute] = [
        Route(pattern, answered, methods=["POST"])
        for pattern in ("/v2/models/{name}/infer", "/v2/models/{name}/infer_stream", "/v2/models/{name}/generate")
    ]
    app = FastAPI(routes=routes)
    app.user_middleware.append(Middleware(StreamingRoutesRefused))
    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b"", "root_path": ""}
    scope.update({"http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80)})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, collect))  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, orjson.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/digits/infer_stream",
        "/v2/models/digits/generate",
        "/v2/models/digits/generate_stream",
        "/v2/models/digits/versions/0/infer_stream",
    ],
)
def test_a_streaming_route_is_answered_404_with_where_to_go(path: str) -> None:
    status, answer = post(path)
    assert status == 404
    assert answer["error"].startswith("model digits does not stream")
    assert "/v2/models/digits/infer" in answer["error"]


def test_infer_passes_to_the_app() -> None:
    assert post("/v2/models/digits/infer") == (200, {"route": "/v2/models/digits/infer"})
