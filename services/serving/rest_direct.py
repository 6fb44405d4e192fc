"""V2 REST JSON inference requests straight from the body to the direct path, for the requests that path takes.

MLServer 1.7.1 answers a JSON inference request through FastAPI: routing, the body validated into pydantic's
`InferenceRequest`, its data plane (model lookup, CloudEvents headers, response cache, metrics), adaptive
batching's queue, the runtime's codecs, then the answer validated again as FastAPI's response model and
serialized. For one MNIST image that is most of the server's time: the profile in docs/performance.md puts
the forward pass at 5 % of a request and FastAPI's routing, validation and serialization at over half.

A request is answered here when it is a POST to `/v2/models/{name}[/versions/{version}]/infer` with a JSON body
(no `Inference-Header-Content-Length`: binary requests are services/serving/binary_rest.py's) that is exactly
one input tensor with `name`, `shape`, `datatype` and `data`, without parameters or requested outputs, to a
model whose direct path (services/serving/direct.py) takes its datatype and shape, while MLServer's response
cache is off. Its data are decoded as MLServer's NumpyCodec decodes them (`np.array(data, dtype)`, then the
shape), run through the module, in one forward pass with the shortcut requests that reached the event loop with
it (`shortcut.Gathered`, which replaces MLServer's adaptive batching for them), and the answer is the JSON
MLServer's path writes for the same request, byte for byte, with the same CloudEvents headers (tests compare
the two). MLServer's model metrics (`model_infer_request_*`, through its data plane's `_infer_contextmanager`),
its REST metrics and the runtime's counters count it as they count every other request.

Every other request, and every request this path cannot decode (values that are not numbers, a shape its data
do not fill, a body that is not JSON, an unknown model), goes on to MLServer's route with its body as it came,
so its answer, error or not, is MLServer's own. SANDBOX_SERVING_DIRECT_PATH=false or
SANDBOX_SERVING_FAST_TENSORS=false sends every request to MLServer's route.

This module imports neither torch nor MLflow: MLServer imports it with the patches, before it loads a model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from mlserver.errors import MLServerError
from mlserver.handlers import DataPlane
from mlserver.utils import generate_uuid

from mlops_sandbox.v2 import LABELS_HEADER
from services.serving.asgi import ASGIApp, Message, Receive, Scope, Send, error, respond
from services.serving.binary_rest import HEADER_LENGTH, inference_route, read_body
from services.serving.shortcut import CONTENT_TYPE, DATATYPES, OUTPUT_NAME, cloudevents_headers, direct_model
from services.serving.tensors import DTYPES

REQUEST_KEYS = {"id", "inputs"}
"""The fields of a request this path answers (`parameters` and `outputs` send it to MLServer's route)."""
TENSOR_KEYS = {"name", "shape", "datatype", "data"}
"""The fields of its one input tensor (an input's `parameters` send it to MLServer's route)."""
DECODE_ERRORS = (ValueError, TypeError, OverflowError)
"""What numpy raises for data that are not numbers of the tensor's datatype, or do not fit its shape."""


def plain_tensor(document: Any) -> tuple[str | None, str, list[int], Any] | None:
    """(request id or None, datatype, shape, data) of a V2 request `document` (parsed JSON) that is one input
    tensor and nothing else (see REQUEST_KEYS and TENSOR_KEYS), with a shape of one or more non-negative
    integers; None for any other document, which this path leaves to MLServer's route."""
    if not isinstance(document, dict) or not document.keys() <= REQUEST_KEYS:
        return None
    request_id, inputs = document.get("id"), document.get("inputs")
    if not (request_id is None or isinstance(request_id, str)) or not isinstance(inputs, list) or len(inputs) != 1:
        return None
    tensor = inputs[0]
    if not isinstance(tensor, dict) or tensor.keys() != TENSOR_KEYS or not isinstance(tensor["name"], str):
        return None
    shape, datatype = tensor["shape"], tensor["datatype"]
    if not isinstance(shape, list) or not shape or not isinstance(datatype, str):
        return None
    if not all(type(dimension) is int and dimension >= 0 for dimension in shape):
        return None  # MLServer's validation coerces 1.0 or "1", and the runtime refuses a negative one
    return request_id, datatype, shape, tensor["data"]


def request_of(body: bytes) -> tuple[str | None, str, list[int], Any] | None:
    """`plain_tensor` of a JSON request body; None when the body is not JSON, or not such a request."""
    try:
        return plain_tensor(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def decoded(dtype: np.dtype[Any], shape: list[int], data: Any) -> np.ndarray | None:
    """`data` as MLServer's NumpyCodec decodes it (`np.array(data, dtype).reshape(shape)`: a new, writable
    array), or None when numpy cannot (values that are not numbers, ragged lists) or the values do not fill
    `shape` exactly (the runtime refuses those, counted, with its reason)."""
    try:
        array = np.array(data, dtype)
    except DECODE_ERRORS:
        return None
    if array.size != math.prod(shape):
        return None
    return array.reshape(shape)


def replayed(body: bytes, receive: Receive) -> Receive:
    """An ASGI `receive` that gives `body`, already read from `receive`, as one message, then defers to `receive`
    (for the client's disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def again() -> Message:
        return pending.pop() if pending else await receive()

    return again


def json_body(scope: Scope) -> bool:
    """Whether `scope` is a POST whose body FastAPI reads as JSON (no content type, or `application/json`) and is
    not a binary request (Inference-Header-Content-Length)."""
    if scope["type"] != "http" or scope.get("method") != "POST":
        return False
    content_type = b""
    for key, value in scope.get("headers", []):
        key = key.lower()
        if key == HEADER_LENGTH.encode():
            return False
        if key == b"content-type":
            content_type = value
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type in (b"", b"application/json")


class DirectJsonMiddleware:
    """ASGI middleware: JSON POSTs to the inference route that the direct path takes are answered here (see the
    module docstring); every other request, with its body, goes on to `app`, MLServer's routes."""

    def __init__(self, app: ASGIApp, data_plane: DataPlane) -> None:
        self.app = app
        self.data_plane = data_plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = inference_route(scope) if json_body(scope) else None
        if match is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if not await self._answered(scope, body, match["name"], match["version"], send):
            await self.app(scope, replayed(body, receive), send)

    async def _answered(self, scope: Scope, body: bytes, name: str, version: str | None, send: Send) -> bool:
        """Answer the request on the direct path; False, having sent nothing, when that path does not take it."""
        request = request_of(body)
        if request is None:
            return False
        request_id, datatype, shape, data = request
        try:
            model = await self.data_plane._model_registry.get_model(name, version)
        except MLServerError:
            return False  # MLServer's route answers it (404 for an unknown model or version)
        direct = direct_model(self.data_plane, model)
        dtype = DTYPES.get(datatype)
        if direct is None or dtype is None or not direct.takes(dtype, shape):
            return False
        images = decoded(dtype, shape, data)
        if images is None:
            return False
        wanted = LABELS_HEADER.encode()
        labels = next((value.decode("latin-1") for key, value in scope["headers"] if key.lower() == wanted), None)
        try:
            async with self.data_plane._infer_contextmanager(name, version) as model:
                answer = await model.gathered.predict(images, labels)
                request_id = generate_uuid() if request_id is None else request_id
                headers = cloudevents_headers(self.data_plane, model, request_id)
                content = answer_json(model.name, model.registry_version, request_id, answer)
        except MLServerError as err:
            await error(send, err.status_code, str(err))
            return True
        await respond(send, 200, content, {"content-type": "application/json", **headers})
        return True


def answer_json(model_name: str, model_version: str | None, request_id: str, answer: np.ndarray) -> bytes:
    """The JSON body MLServer's REST path writes for a request answered with `answer` (a numeric numpy array):
    its InferenceResponse without unset or null fields, in its fields' order; one output, `output-1`, its values
    flattened row-major as Python numbers (MLServer's NumpyCodec: `tolist()`)."""
    document: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        document["model_version"] = model_version
    document["id"] = request_id
    document["parameters"] = {"content_type": CONTENT_TYPE}
    document["outputs"] = [
        {
            "name": OUTPUT_NAME,
            "shape": list(answer.shape),
            "datatype": DATATYPES[answer.dtype.newbyteorder("<")],
            "parameters": {"content_type": CONTENT_TYPE},
            "data": answer.ravel().tolist(),
        }
    ]
    return orjson.dumps(document)
