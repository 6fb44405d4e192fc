"""The V2 binary tensor data extension on MLServer's REST inference endpoint.

Clients such as `tritonclient.http` (its default, `set_data_from_numpy(..., binary_data=True)`) send an
inference request as a JSON header followed by the tensors' raw bytes: the `Inference-Header-Content-Length`
request header gives the JSON's length in bytes, each input with `"parameters": {"binary_data_size": N}`
takes the next N bytes, in the order of the inputs. An output requested with `"binary_data": true` (or every
output, with the request parameter `"binary_data_output": true`) comes back the same way: its bytes follow the
JSON header of the answer, whose length is in the response's `Inference-Header-Content-Length`. The
extension is kserve's "Binary Tensor Data Extension" of the Open Inference Protocol (Triton's
`binary_tensor_data`). MLServer 1.7.1 parses such a body as JSON and answers 422 "JSON decode error".

Requests without the header are not touched; MLServer answers them as before. A request with it is decoded
here, its tensors read in place with np.frombuffer (services/serving/tensors.py), and handed to MLServer's
data plane as its own REST handler does (request headers in `parameters.headers`, response headers out of
them). A body that does not match its header is answered 400 with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
from mlserver.errors import MLServerError
from mlserver.handlers import DataPlane
from mlserver.types import InferenceRequest, InferenceResponse, TensorData
from mlserver.utils import extract_headers, insert_headers
from pydantic import ValidationError

from services.serving.asgi import ASGIApp, Receive, Scope, Send, error, respond
from services.serving.tensors import TensorBytesError, from_bytes, to_bytes

HEADER_LENGTH = "inference-header-content-length"
INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")


def inference_route(scope: Scope) -> re.Match[str] | None:
    """The match of INFER_PATH (groups `name`, `version`) for the request's path below its root path, or None."""
    return INFER_PATH.fullmatch(scope.get("path", "")[len(scope.get("root_path", "")) :])


class BinaryRequestError(ValueError):
    """A binary request whose body does not match its JSON header: a client error (400)."""


def parameters_of(item: dict[str, Any]) -> dict[str, Any]:
    """The `parameters` object of a V2 request, input or output, or {}; BinaryRequestError if not an object."""
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BinaryRequestError(f"'parameters' must be an object, not {type(parameters).__name__}")
    return parameters


def decode_request(body: bytes, header_length: int) -> tuple[InferenceRequest, Callable[[str], bool]]:
    """The inference request in `body` (JSON header of `header_length` bytes, then the inputs' raw bytes), with
    each binary input's data a read-only 1-D numpy view of `body`; and which outputs the client wants binary
    (a predicate on the output's name).

    The extension's own parameters (`binary_data_size`, `binary_data`, `binary_data_output`) are taken out of
    the request, so the model sees what a JSON request would give it. Raises BinaryRequestError (or its
    sibling TensorBytesError, a ValueError too) when the header length is outside the body, the header is not a
    JSON object, an input's bytes run past the body or do not fit its shape and datatype, or bytes are left
    over; pydantic's ValidationError when the header is not a V2 inference request.
    """
    if not 0 <= header_length <= len(body):
        raise BinaryRequestError(f"{HEADER_LENGTH} is {header_length}, outside the request body of {len(body)} bytes")
    try:
        header = orjson.loads(memoryview(body)[:header_length])
    except orjson.JSONDecodeError as err:
        raise BinaryRequestError(f"the first {header_length} bytes ({HEADER_LENGTH}) are not JSON: {err}") from err
    if not isinstance(header, dict):
        raise BinaryRequestError("the JSON header must be an object, a V2 inference request")
    offset = header_length
    inputs = header.get("inputs")
    views: dict[int, Any] = {}  # input index -> its data, a numpy view of `body`
    for index, tensor in enumerate(inputs if isinstance(inputs, list) else []):
        if not isinstance(tensor, dict):
            continue  # pydantic names the problem below
        parameters = parameters_of(tensor)
        size = parameters.pop("binary_data_size", None)
        if size is None:
            continue
        name = tensor.get("name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BinaryRequestError(f"input {name!r}: binary_data_size must be a non-negative integer, not {size!r}")
        if "data" in tensor:
            raise BinaryRequestError(f"input {name!r} has both 'data' and binary_data_size")
        if offset + size > len(body):
            raise BinaryRequestError(
                f"input {name!r}: binary_data_size {size} at byte {offset} runs past the body of {len(body)} bytes"
            )
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise BinaryRequestError(f"input {name!r}: shape must be a list of integers, not {shape!r}")
        views[index] = from_bytes(
            str(name), str(tensor.get("datatype")), shape, memoryview(body)[offset : offset + size]
        )
        # Validated without its data: pydantic would try the array as a list of floats first, which costs
        # 0.86 ms for a batch of 32 images (measured), the cost the gRPC patch removes too (patches.py).
        tensor["data"] = []
        offset += size
    if offset != len(body):
        raise BinaryRequestError(
            f"the request body has {len(body) - offset} bytes after its JSON header and binary inputs"
        )
    everything = bool(parameters_of(header).pop("binary_data_output", False))
    chosen: dict[str, bool] = {}
    outputs = header.get("outputs")
    for output in outputs if isinstance(outputs, list) else []:
        if isinstance(output, dict) and "binary_data" in parameters_of(output):
            chosen[str(output.get("name"))] = bool(parameters_of(output).pop("binary_data"))
    request = InferenceRequest.model_validate(header)
    for index, view in views.items():
        request.inputs[index].data = TensorData.model_construct(view)
    return request, lambda name: chosen.get(name, everything)


def encode_response(response: InferenceResponse, binary: Callable[[str], bool]) -> tuple[bytes, int | None]:
    """The body of the answer to a binary request: its JSON, followed by the raw bytes of each output that
    `binary` chooses (with `"binary_data_size"` in its parameters); and the JSON's length in bytes for the
    `Inference-Header-Content-Length` response header, or None when no output is binary (plain JSON).

    Raises TensorBytesError for a binary output whose datatype is not numeric.
    """
    document = response.model_dump(exclude_unset=True, exclude_none=True)
    chunks = []
    for output, encoded in zip(response.outputs, document.get("outputs", []), strict=True):
        if not binary(output.name):
            continue
        raw = to_bytes(output.datatype, getattr(output.data, "root", output.data))
        encoded.pop("data", None)
        encoded["parameters"] = {**encoded.get("parameters", {}), "binary_data_size": len(raw)}
        chunks.append(raw)
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


async def read_body(receive: Receive) -> bytes:
    """The whole body of an ASGI HTTP request, in bytes."""
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # http.disconnect: the client is gone
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


class BinaryTensorMiddleware:
    """ASGI middleware: POSTs to `/v2/models/{name}[/versions/{version}]/infer` with an
    `Inference-Header-Content-Length` header are answered here, through MLServer's `data_plane`; everything
    else goes on to `app`. Answers 400 {"error": reason} for a body that does not match its header, MLServer's
    status and message for its own errors (404 for an unknown model, 400 for input the runtime refuses)."""

    def __init__(self, app: ASGIApp, data_plane: DataPlane) -> None:
        self.app = app
        self.data_plane = data_plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header_length = self._binary(scope)
        match = inference_route(scope) if header_length is not None else None
        if header_length is None or match is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        try:
            if not header_length.isdigit():
                raise BinaryRequestError(f"{HEADER_LENGTH} must be a number of bytes, not {header_length!r}")
            payload, binary = decode_request(body, int(header_length))
        except (ValueError, ValidationError) as err:  # BinaryRequestError, TensorBytesError, pydantic's
            await error(send, 400, str(err))
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        insert_headers(payload, headers)
        try:
            response = await self.data_plane.infer(payload, match["name"], match["version"])
            extra = extract_headers(response) or {}  # before encoding: they are not part of the JSON answer
            content, json_length = encode_response(response, binary)
        except MLServerError as err:
            await error(send, err.status_code, str(err))
            return
        except TensorBytesError as err:
            await error(send, 400, str(err))
            return
        if json_length is None:
            await respond(send, 200, content, {"content-type": "application/json", **extra})
        else:
            await respond(
                send,
                200,
                content,
                {"content-type": "application/octet-stream", HEADER_LENGTH: str(json_length), **extra},
            )

    @staticmethod
    def _binary(scope: Scope) -> str | None:
        """The Inference-Header-Content-Length of an HTTP POST, or None."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            return None
        for key, value in scope.get("headers", []):
            if key.lower() == HEADER_LENGTH.encode():
                return str(value.decode("latin-1")).strip()
        return None
