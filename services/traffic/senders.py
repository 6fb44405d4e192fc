"""Sending one request over V2 REST or gRPC, and reading what answered: outcome, backend, version, digits.

Each request carries its images' true digits in the `x-sandbox-labels` header (mlops_sandbox.v2.LABELS_HEADER),
which serving only counts: that is how a shadow copy, whose answers reach no client, gets an online accuracy.

The router in front of the endpoints names the backend that answered in the `x-sandbox-backend` header (for
gRPC, in the response metadata); every V2 answer names its registry version in `model_version`. Labels stay
bounded: a value that is not a short name is reported as `other`.

tritonclient's gRPC protocol classes are imported only when a gRPC sender is made (see mlops_sandbox.v2 for
why a process cannot hold them and MLServer's at once).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import requests
from requests.adapters import HTTPAdapter

from mlops_sandbox.router import BACKEND_HEADER
from mlops_sandbox.v2 import INPUT_NAME, LABELS_HEADER, rest_request_body

Outcome = Literal["ok", "client_error", "server_error", "transport_error"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "client_error", "server_error", "transport_error")
DIRECT = "direct"
"""The backend label of an answer without the router's header: the endpoint was reached directly."""
NO_ANSWER = "unknown"
"""The backend label of a transport error: nothing answered, so no backend can be named."""
OTHER = "other"
"""The label of a header or version value that is not a short name (keeps the label set bounded)."""
LABEL_VALUE = re.compile(r"[A-Za-z0-9._-]{1,40}")
JSON_HEADERS = {"Content-Type": "application/json"}


def labels_value(labels: np.ndarray) -> str:
    """The LABELS_HEADER value of int labels (N,): comma-separated digits in batch order ("7,2,1")."""
    return ",".join(str(int(label)) for label in labels)


# gRPC codes that blame the request, after Google's mapping of gRPC codes to HTTP statuses (google.rpc.Code):
# these map to 4xx; every other failure code maps to 5xx.
GRPC_CLIENT_ERRORS = frozenset(
    {
        "CANCELLED",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
    }
)
# Codes that grpc raises on the client's side when no server answered (refused, reset, our own deadline).
GRPC_TRANSPORT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


@dataclass(frozen=True)
class Answer:
    """What one request got.

    `digits`: the predicted digit of each image, int64 (N,), for an `ok` answer only. `seconds`: time from
    sending to the whole answer (seconds), None when nothing answered. `detail`: why it failed, for the log.
    """

    outcome: Outcome
    backend: str
    model_version: str
    digits: np.ndarray | None = None
    seconds: float | None = None
    detail: str = ""


def label_value(value: str | None, *, missing: str) -> str:
    """`value` as a label: `missing` when absent or empty, `other` when it is not a short name."""
    if not value:
        return missing
    return value if LABEL_VALUE.fullmatch(value) else OTHER


def http_outcome(status: int) -> Outcome:
    """2xx: ok; 4xx: client_error; anything else a server sent (5xx, an unexpected 1xx or 3xx): server_error."""
    if 200 <= status < 300:
        return "ok"
    return "client_error" if 400 <= status < 500 else "server_error"


def grpc_outcome(code_name: str, *, answered: bool) -> Outcome:
    """The outcome of a gRPC status, by its name (`OK`, `INVALID_ARGUMENT`, ...).

    `answered`: whether the other side sent any metadata. UNAVAILABLE or DEADLINE_EXCEEDED without it is the
    client's own verdict (connection refused, our timeout): transport_error; from a server or proxy, server_error.
    """
    if code_name == "OK":
        return "ok"
    if code_name in GRPC_CLIENT_ERRORS:
        return "client_error"
    if code_name in GRPC_TRANSPORT_CODES and not answered:
        return "transport_error"
    return "server_error"


def digits_of(values: Any, shape: Iterable[int], images: int) -> np.ndarray:
    """The predicted digit of each image, int64 (images,), from an output of class probabilities: `values`, any
    nesting, as the answer declares them with `shape` (images, classes). ValueError when the shape is not one
    row per image or does not match the values."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    shape = [int(size) for size in shape]
    if len(shape) != 2 or shape[0] != images or shape[1] < 2 or flat.size != shape[0] * shape[1]:
        raise ValueError(f"{flat.size} values of shape {shape} for {images} images")
    return flat.reshape(shape).argmax(axis=1).astype(np.int64)


def read_rest_answer(status: int, body: bytes, backend: str, seconds: float, images: int) -> Answer:
    """Grade a V2 REST answer (status, JSON body) to a request of `images` images; backend is already a label.

    A 2xx whose body is not a V2 answer with one prediction per image counts as a server_error.
    """
    outcome = http_outcome(status)
    try:
        answer: Any = json.loads(body)
    except ValueError:
        answer = None
    version = answer.get("model_version") if isinstance(answer, dict) else None
    model_version = label_value(str(version) if version else None, missing="")
    if outcome != "ok":
        return Answer(outcome, backend, model_version, seconds=seconds, detail=f"HTTP {status}: {body[:200]!r}")
    try:
        output = answer["outputs"][0]
        digits = digits_of(output["data"], output["shape"], images)
    except (TypeError, KeyError, IndexError, ValueError) as err:
        detail = f"HTTP {status}, not a V2 answer: {err}"
        return Answer("server_error", backend, model_version, seconds=seconds, detail=detail)
    return Answer("ok", backend, model_version, digits=digits, seconds=seconds)


def backend_of(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The router's `x-sandbox-backend` value in gRPC metadata (key, value pairs), or None."""
    for key, value in metadata or ():
        if key.lower() == BACKEND_HEADER:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def grpc_output(response: Any) -> np.ndarray:
    """The first output of a ModelInferResponse as a flat array, whether raw bytes or typed contents."""
    output = response.outputs[0]
    if response.raw_output_contents:
        dtype = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2"}[output.datatype]
        return np.frombuffer(response.raw_output_contents[0], dtype=dtype)
    contents = output.contents
    return np.asarray(list(contents.fp32_contents) or list(contents.fp64_contents), dtype=np.float64)


class RestSender:
    """Sends float32 images (N, 1, 28, 28) to a V2 REST inference URL and grades the answer. Thread-safe."""

    def __init__(self, url: str, *, timeout: float, connections: int) -> None:
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()
        # One kept-alive connection per thread that may send at once, instead of requests' default 10.
        self.session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=connections))
        self.session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=connections))

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> Answer:
        """Send one request of images and their labels, int (N,); never raises for what the network or the
        server does."""
        body = rest_request_body(images)
        headers = {**JSON_HEADERS, LABELS_HEADER: labels_value(labels)}
        started = time.monotonic()
        try:
            response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as err:
            return Answer("transport_error", NO_ANSWER, "", detail=f"{type(err).__name__}: {err}")
        seconds = time.monotonic() - started
        backend = label_value(response.headers.get(BACKEND_HEADER), missing=DIRECT)
        return read_rest_answer(response.status_code, response.content, backend, seconds, len(images))

    def close(self) -> None:
        self.session.close()


class GrpcSender:
    """Sends float32 images (N, 1, 28, 28) to a V2 gRPC endpoint (host:port) and grades the answer. Thread-safe."""

    def __init__(self, target: str, model: str, *, timeout: float) -> None:
        import grpc  # with tritonclient's protocol classes: see the module docstring
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        self.grpc: Any = grpc
        self.pb: Any = service_pb2
        self.model = model
        self.timeout = timeout
        self.channel = grpc.insecure_channel(target)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def request(self, images: np.ndarray) -> Any:
        """A ModelInferRequest carrying the batch as raw little-endian float32."""
        batch = np.ascontiguousarray(images, dtype="<f4")
        tensor = self.pb.ModelInferRequest.InferInputTensor(name=INPUT_NAME, datatype="FP32", shape=list(batch.shape))
        return self.pb.ModelInferRequest(model_name=self.model, inputs=[tensor], raw_input_contents=[batch.tobytes()])

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> Answer:
        """Send one request of images and their labels, int (N,); never raises for what the network or the
        server does."""
        request = self.request(images)
        metadata = ((LABELS_HEADER, labels_value(labels)),)
        started = time.monotonic()
        try:
            response, call = self.stub.ModelInfer.with_call(request, timeout=self.timeout, metadata=metadata)
        except self.grpc.RpcError as err:
            return read_grpc_error(err, time.monotonic() - started)
        seconds = time.monotonic() - started
        backend = label_value(backend_of(call.initial_metadata()), missing=DIRECT)
        model_version = label_value(response.model_version, missing="")
        try:
            digits = digits_of(grpc_output(response), response.outputs[0].shape, len(images))
        except (IndexError, KeyError, ValueError) as err:
            detail = f"gRPC OK, not a V2 answer: {err}"
            return Answer("server_error", backend, model_version, seconds=seconds, detail=detail)
        return Answer("ok", backend, model_version, digits=digits, seconds=seconds)

    def close(self) -> None:
        self.channel.close()


def read_grpc_error(err: Any, seconds: float) -> Answer:
    """Grade a failed gRPC call (a grpc.RpcError that is also a grpc.Call: code, details, metadata).

    A proxy's error answer carries its headers in the trailing metadata (a trailers-only response), so the
    backend is looked for there too.
    """
    initial, trailing = tuple(err.initial_metadata() or ()), tuple(err.trailing_metadata() or ())
    code = err.code().name
    outcome = grpc_outcome(code, answered=bool(initial or trailing))
    detail = f"gRPC {code}: {err.details()}"
    if outcome == "transport_error":
        return Answer(outcome, NO_ANSWER, "", detail=detail)
    backend = label_value(backend_of(initial) or backend_of(trailing), missing=DIRECT)
    return Answer(outcome, backend, "", seconds=seconds, detail=detail)
