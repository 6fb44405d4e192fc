"""MLServer's streaming REST routes, refused for models that do not stream.

MLServer 1.7.1 serves `/v2/models/{name}[/versions/{v}]/infer_stream`, `/generate` and `/generate_stream` for
every model, and sends their 200 and event-stream headers before the model runs: a request the model refuses
can then only end as a 500 (measured with schemathesis: `{"inputs": []}` on infer_stream), and no MLServer
setting removes the routes. The sandbox serves classifiers through `predict`, never `predict_stream`, so this
ASGI middleware, put in front of MLServer's routes by services/serving/patches.py, answers those paths 404
with MLServer's error body and a pointer to /infer, before MLServer starts a stream.
"""

from __future__ import annotations

import re

from services.serving.asgi import ASGIApp, Receive, Scope, Send, error

STREAMING_PATH = re.compile(
    r"/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?/(?P<route>infer_stream|generate_stream|generate)"
)


class StreamingRoutesRefused:
    """ASGI middleware: HTTP requests to a model's streaming or generate routes get 404 `{"error": ...}`; every
    other request passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = STREAMING_PATH.fullmatch(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        reason = (
            f"model {match['name']} does not stream: {match['route']} is not served; "
            f"send the request to /v2/models/{match['name']}/infer"
        )
        await error(send, 404, reason)
