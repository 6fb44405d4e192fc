"""What the two shortcuts past MLServer's request path share: gRPC's (services/serving/grpc_direct.py) and REST
JSON's (services/serving/rest_direct.py).

Each answers a request the direct path takes (services/serving/direct.py) without MLServer's pydantic types,
codecs and adaptive batching (requests that arrive together share a forward pass: Gathered), inside MLServer's
data plane's `_infer_contextmanager` (its model metrics and model context), and must give the answer
MLServer's path gives, field for field: the names, content types and CloudEvents headers below are MLServer
1.7.1's, and the tests of both compare the two paths' answers.

This module imports neither torch nor MLflow: MLServer imports it with the patches, before it loads a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from mlserver.handlers import DataPlane
from mlserver.types import InferenceResponse
from mlserver.utils import extract_headers

from services.serving.tensors import DTYPES

OUTPUT_NAME = "output-1"
"""The name MLServer's NumpyRequestCodec gives a model's one output (it counts from 1), as MLServer's path answers."""
CONTENT_TYPE = "np"
"""The content type MLServer's path puts on the answer and its output: its NumpyCodec's."""
DATATYPES = {dtype: name for name, dtype in DTYPES.items()}
"""The V2 datatype of each numpy dtype a direct answer can have."""


def direct_model(data_plane: DataPlane, model: Any) -> Any:
    """The direct path (a DirectTorchModel) of `model`, MLServer's loaded model for a request, when a shortcut
    may answer for it: the model is ready, is the sandbox's runtime with a direct path, and MLServer's response
    cache is off (a shortcut does not consult it). Otherwise None."""
    if data_plane._response_cache is not None or not getattr(model, "ready", False):
        return None
    if not isinstance(getattr(model, "gathered", None), Gathered):
        return None  # not the sandbox's runtime
    return getattr(model, "direct", None)


def cloudevents_headers(data_plane: DataPlane, model: Any, response_id: str) -> dict[str, str]:
    """The headers MLServer's data plane puts on the answer with id `response_id` (its CloudEvents middleware's
    `ce-*`): HTTP headers over REST, trailing metadata over gRPC."""
    headers = InferenceResponse.model_construct(id=response_id, parameters=None)
    data_plane._inference_middleware.response_middleware(headers, model.settings)
    return extract_headers(headers) or {}


class Predicts(Protocol):
    """What Gathered needs of a model: the sandbox runtime's `predict_arrays`."""

    def predict_arrays(self, batches: Sequence[np.ndarray], labels: Sequence[str | None]) -> list[np.ndarray]: ...


TURNS_UNDER_LOAD = 2
"""Turns of the event loop a pass waits for company when the pass before it had some: a request whose bytes
the loop reads on the next turn reaches the shortcut on the turn after (uvicorn and grpc.aio start a task for
it). Measured on the 2-core machine, REST JSON single images from 16 clients, 3 rounds side by side: 3,002 to
3,407 req/s with no wait (about 2 requests a pass), 3,697 to 4,451 with 2 turns (about 13); 4 and 8 turns
were no better (4,004 to 4,643). One client is not made to wait (1,427 to 1,806 req/s against 1,664 to
1,796)."""


class Gathered:
    """The direct path's forward passes, shared by the shortcut requests that arrive together.

    A pass runs on the event loop's next turn with every shortcut request that reached the loop before it, as
    one forward pass of their images concatenated, at most `max_requests` requests a pass (MLServer's
    `max_batch_size`, MLSERVER_MODEL_MAX_BATCH_SIZE). When the pass before had more than one request, the
    server is under load and the pass waits TURNS_UNDER_LOAD turns of the loop for more (microseconds, no
    timer); one client at a time never waits. This is what MLServer's adaptive batching gives its own path,
    without its timed wait (`max_batch_time`), its pydantic merge and split, or its queue: one forward pass of
    16 single images costs about as much as one of a single image. A batched answer can differ from the single
    one in the last bits of float32 (the matrix products sum in another order), as under MLServer's batching.

    A failed pass fails every request in it with the same exception. `max_requests` 0 or 1: each request runs
    alone, at once.
    """

    def __init__(self, model: Predicts, max_requests: int) -> None:
        self.model = model
        self.max_requests = max_requests
        self.waiting: list[tuple[np.ndarray, str | None, asyncio.Future[np.ndarray]]] = []
        self.had_company = False

    async def predict(self, images: np.ndarray, labels: str | None) -> np.ndarray:
        """The model's answer to `images` (the direct path's dtype and shape); `labels` is the request's
        LABELS_HEADER value, or None. Raises what the model's `predict_arrays` raises."""
        if self.max_requests <= 1:
            return self.model.predict_arrays([images], [labels])[0]
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((images, labels, future))
        if len(self.waiting) == 1:
            future.get_loop().call_soon(self._turn, TURNS_UNDER_LOAD if self.had_company else 0)
        return await future

    def flush(self) -> None:
        """Run the passes of the requests gathered so far, now (the model is about to let go of its module)."""
        if self.waiting:
            self._run()

    def _turn(self, left: int) -> None:
        if left > 0 and len(self.waiting) < self.max_requests:
            asyncio.get_running_loop().call_soon(self._turn, left - 1)
        else:
            self._run()

    def _run(self) -> None:
        waiting, self.waiting = self.waiting, []
        self.had_company = len(waiting) > 1
        for start in range(0, len(waiting), self.max_requests):
            batch = waiting[start : start + self.max_requests]
            try:
                answers = self.model.predict_arrays(
                    [images for images, _, _ in batch], [labels for _, labels, _ in batch]
                )
            except Exception as err:  # every request of the pass gets it, as its own failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, _, future), answer in zip(batch, answers, strict=True):
                if not future.done():  # a client that went away cancelled its request
                    future.set_result(answer)
