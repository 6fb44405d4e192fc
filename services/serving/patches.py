"""Every change this project makes to MLServer 1.7.1's internals, in one place, checked against the pin.

- gRPC: `raw_input_contents` become numpy views (services/serving/tensors.py) instead of MLServer's Python
  list of floats (`mlserver.raw.inject_raw`, called by `mlserver.grpc.converters`).
- Adaptive batching: requests whose data are numpy arrays (raw gRPC, binary REST) are merged with
  `np.concatenate`; MLServer's `_merge_data` knows lists only, and would return a list of arrays, or, mixed
  with a JSON request, add the two element by element (`sum(all_data, [])`).
- Adaptive batching (`batch_requests`) waits for company only when the batch before had some, and hands a batch
  of one request to the model as it is (`SoloBatch`), as MLServer does with batching off: one client at a time
  no longer pays for merging and splitting, nor waits `max_batch_time`, on every request.
- gRPC: a request that MLServer's converter cannot decode is INVALID_ARGUMENT, not INTERNAL
  (`ModelInferRequestConverter.to_types`).
- gRPC: ModelReady for a model the server does not have is NOT_FOUND with MLServer's message, as ModelMetadata
  and ModelInfer answer it, not UNKNOWN "Unexpected <class 'mlserver.errors.ModelNotFound'>"
  (`InferenceServicer.ModelReady`; over REST it is a 404).
- gRPC: a request the direct path takes (one raw tensor of the signature's datatype and shape) is answered
  from the protobuf, without MLServer's pydantic types, data plane path or adaptive batching
  (`InferenceServicer.ModelInfer`, services/serving/grpc_direct.py); every other request takes MLServer's.
- REST: the streaming routes refused (services/serving/streaming.py), the request-size limit
  (services/serving/limits.py), the V2 binary tensor data extension (services/serving/binary_rest.py) and JSON
  requests the direct path takes answered without FastAPI's validation, MLServer's data plane path or adaptive
  batching (services/serving/rest_direct.py) are added to the FastAPI app that `mlserver.rest.server.RESTServer`
  builds with `create_app`, inside MLServer's own middlewares (metrics, gzip), in front of its routes.

MLServer 1.7.1 has had no release since, and the project pins it (pyproject.toml); `install` refuses any
other version, or a patched function whose signature moved, with a RuntimeError naming it, and
tests/unit/services/serving/test_patches.py fails on the same. The REST part must be in place before MLServer
builds its REST app, which is before it imports any model runtime: MLServer constructs its model repository
first, so settings.json names `SandboxModelRepository` (services/serving/model_store.py), which installs all
of this.
"""

from __future__ import annotations

import asyncio
import inspect
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import mlserver
import mlserver.batching.adaptive
import mlserver.batching.requests
import mlserver.grpc.converters
import mlserver.grpc.servicers
import mlserver.raw
import mlserver.rest.server
import numpy as np
from fastapi import FastAPI
from mlserver.batching.adaptive import AdaptiveBatcher
from mlserver.batching.requests import BatchedRequests
from mlserver.errors import InferenceError, MLServerError
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ModelInferRequestConverter
from mlserver.grpc.servicers import InferenceServicer
from mlserver.grpc.utils import handle_mlserver_error
from mlserver.handlers import DataPlane
from mlserver.registry import MultiModelRegistry
from mlserver.repository import SchemalessModelRepository
from mlserver.types import Datatype, InferenceRequest, InferenceResponse, TensorData
from starlette.middleware import Middleware

from services.serving import grpc_direct
from services.serving.binary_rest import BinaryTensorMiddleware
from services.serving.limits import RequestSizeLimit
from services.serving.rest_direct import DirectJsonMiddleware
from services.serving.streaming import StreamingRoutesRefused
from services.serving.tensors import DTYPES, TensorBytesError, from_bytes

MLSERVER_VERSION = "1.7.1"
PATCHED: dict[str, tuple[Any, Callable[..., Any], list[str]]] = {
    "mlserver.grpc.converters.inject_raw": (
        mlserver.grpc.converters,
        mlserver.raw.inject_raw,
        ["elems", "raw_contents"],
    ),
    "mlserver.batching.requests._merge_data": (
        mlserver.batching.requests,
        mlserver.batching.requests._merge_data,
        ["all_data"],
    ),
    "mlserver.batching.adaptive.AdaptiveBatcher._batch_requests": (
        AdaptiveBatcher,
        AdaptiveBatcher._batch_requests,
        ["self"],
    ),
    "mlserver.rest.server.create_app": (
        mlserver.rest.server,
        mlserver.rest.server.create_app,
        ["settings", "data_plane", "model_repository_handlers"],
    ),
    "mlserver.grpc.converters.ModelInferRequestConverter.to_types": (
        ModelInferRequestConverter,
        ModelInferRequestConverter.to_types.__func__,  # type: ignore[attr-defined]  # the classmethod's function
        ["cls", "pb_object"],
    ),
    "mlserver.grpc.servicers.InferenceServicer.ModelInfer": (
        InferenceServicer,
        InferenceServicer.ModelInfer,
        ["self", "request", "context"],  # the parameters of handle_mlserver_error's wrapper
    ),
    "mlserver.grpc.servicers.InferenceServicer.ModelReady": (
        InferenceServicer,
        InferenceServicer.ModelReady,
        ["self", "request", "context"],
    ),
}
"""What is replaced: the module (or class) attribute, MLServer's own function, and its parameters as of
MLSERVER_VERSION."""
USED: dict[str, tuple[Callable[..., Any], list[str]]] = {
    "mlserver.handlers.DataPlane._infer_contextmanager": (DataPlane._infer_contextmanager, ["self", "name", "version"]),
    "mlserver.registry.MultiModelRegistry.get_model": (MultiModelRegistry.get_model, ["self", "name", "version"]),
}
"""MLServer's private functions that the shortcuts (services/serving/grpc_direct.py, rest_direct.py) call, not
replaced, and their parameters as of MLSERVER_VERSION."""
STATIC_ORIGINALS = {
    name: inspect.getattr_static(owner, name.rsplit(".", 1)[1]) for name, (owner, _, _) in PATCHED.items()
}
"""Each attribute as MLServer defines it (a classmethod stays one), put back by `install` when not replaced."""
ALWAYS = {
    "mlserver.rest.server.create_app",
    "mlserver.grpc.converters.ModelInferRequestConverter.to_types",
    "mlserver.grpc.servicers.InferenceServicer.ModelReady",
}
"""Installed whatever `fast_tensors` says: they answer bad input with 4xx and hold the request-size limit."""
DECODE_ERRORS = (ValueError, TypeError, IndexError, OverflowError, struct.error)
"""What decoding a gRPC request raised in MLServer 1.7.1 for input it cannot take (pydantic's ValidationError
is a ValueError), answered INTERNAL there."""


def problems() -> list[str]:
    """What in the installed MLServer differs from what the patches were written against: its version, and
    the parameters of each function patched (PATCHED) or called (USED). Empty when the patches fit."""
    found = []
    if mlserver.__version__ != MLSERVER_VERSION:
        found.append(f"mlserver is {mlserver.__version__}, the patches were written for {MLSERVER_VERSION}")
    checked = {name: (function, parameters) for name, (_, function, parameters) in PATCHED.items()} | USED
    for name, (function, parameters) in checked.items():
        actual = list(inspect.signature(function).parameters)
        if actual != parameters:
            found.append(f"{name} takes {actual}, the patch expects {parameters}")
    return found


def inject_raw(elems: Sequence[Any], raw_contents: Sequence[bytes]) -> Sequence[Any]:
    """mlserver.raw.inject_raw with numeric tensors read by np.frombuffer: each input without `data` takes
    the next entry of `raw_contents`, as a read-only 1-D numpy view (BYTES inputs: MLServer's list of bytes).

    Raises InferenceError (gRPC INVALID_ARGUMENT) when an entry's length does not match its input's shape
    and datatype, or when there are fewer entries than inputs without data; MLServer's own raised a
    struct.error or an IndexError, answered as INTERNAL.
    """
    entries = iter(raw_contents)
    for elem in elems:
        if elem.data:
            continue  # mixed requests: an input with its own data takes no raw entry, as in MLServer
        raw = next(entries, None)
        if raw is None:
            raise InferenceError(f"input {elem.name!r} has no data and raw_input_contents has no entry left for it")
        if elem.datatype not in DTYPES:
            elem.data = TensorData(mlserver.raw.unpack(elem, raw))
            continue
        try:
            view = from_bytes(elem.name, elem.datatype, elem.shape, raw)
        except TensorBytesError as err:
            raise InferenceError(str(err)) from err
        # Unvalidated, as MLServer builds the rest of the request: validating tries the array as a list of
        # 25,088 floats first, which took 0.86 ms for a batch of 32, more than MLServer's whole list path.
        elem.data = TensorData.model_construct(view)
    return elems


def merge_data(all_data: list[Any]) -> Any:
    """MLServer's adaptive batching's `_merge_data`, which also merges numpy data: when any request of the
    batch carries an array, the flat concatenation of all of them (dtype promoted as numpy does; the codec
    casts to the tensor's datatype after), else MLServer's own merge of lists, strings or bytes.

    The array comes back as an unvalidated TensorData, which the batched `RequestInput` that MLServer builds
    around it takes as it is: given the bare array, pydantic tried it as a list of floats first, 869 us for one
    batch of 32 images (timed in-process), about a third of the server's CPU time for such a gRPC request."""
    if any(isinstance(data, np.ndarray) for data in all_data):
        return TensorData.model_construct(np.concatenate([np.asarray(data).ravel() for data in all_data]))
    return ORIGINALS["mlserver.batching.requests._merge_data"](all_data)


BATCHERS = ("sandbox", "mlserver")
"""Adaptive batching's policy: this module's `batch_requests`, or MLServer 1.7.1's own."""
_HAD_COMPANY = "_sandbox_had_company"


class SoloBatch:
    """A batch of one request, with what MLServer's batcher uses of BatchedRequests (`inference_requests`,
    `merged_request`, `split_response`), but neither merged nor split: the model gets the request as it came,
    as with batching off. BatchedRequests builds a new request around a copy of the data and validates it, then
    a new response: with one request, that is all it does."""

    def __init__(self, internal_id: str, request: InferenceRequest) -> None:
        self.inference_requests = {internal_id: request}
        self.merged_request = request

    def split_response(self, response: InferenceResponse) -> dict[str, InferenceResponse]:
        """{internal id: `response`}, with the request's id, as BatchedRequests.split_response sets it."""
        ((internal_id, request),) = self.inference_requests.items()
        response.id = request.id
        return {internal_id: response}


def _take_queued(
    queue: asyncio.Queue[tuple[str, InferenceRequest]], batch: dict[str, InferenceRequest], size: int
) -> None:
    while len(batch) < size and not queue.empty():
        internal_id, request = queue.get_nowait()
        batch[internal_id] = request


async def batch_requests(self: AdaptiveBatcher) -> AsyncIterator[BatchedRequests | SoloBatch]:
    """MLServer's AdaptiveBatcher._batch_requests (the batches of up to `max_batch_size` requests, in arrival
    order, that one forward pass answers), with three changes:

    - A batch waits `max_batch_time` for more requests only when the batch before it had more than one: under
      load the batches stay as large as MLServer's, and one client at a time is not made to wait.
    - A batch of one request is a SoloBatch: not merged and split.
    - The wait is one asyncio.sleep, after which the queue is drained, instead of one `asyncio.wait_for` per
      request, which creates and cancels a task on each timeout.

    Measured side by side on this machine (two rounds, single images over REST): at 1 client 8-10 % more
    requests/s than MLServer's batcher (batching off: 15-17 % more); at 16 clients, the rate of MLServer's
    batcher, about 1.6x that of batching off (docs/performance.md, "What the shipped defaults change").
    """
    queue = self._requests
    while not queue.empty():
        batch: dict[str, InferenceRequest] = {}
        _take_queued(queue, batch, self._max_batch_size)
        if getattr(self, _HAD_COMPANY, False) and len(batch) < self._max_batch_size and self._max_batch_time > 0:
            await asyncio.sleep(self._max_batch_time)
            _take_queued(queue, batch, self._max_batch_size)
        setattr(self, _HAD_COMPANY, len(batch) > 1)
        if len(batch) == 1:
            yield SoloBatch(*next(iter(batch.items())))
        else:
            yield BatchedRequests(batch)


def create_app(settings: mlserver.settings.Settings, data_plane: DataPlane, model_repository_handlers: Any) -> FastAPI:
    """MLServer's REST app with, in front of its routes and inside its own middlewares (so that these requests
    are counted and logged as the others are): the streaming routes refused (services/serving/streaming.py),
    the request-size limit (services/serving/limits.py), the binary tensor data extension, then JSON requests on
    the direct path (services/serving/rest_direct.py), the last three when `install` was asked for them."""
    app: FastAPI = ORIGINALS["mlserver.rest.server.create_app"](settings, data_plane, model_repository_handlers)
    app.user_middleware.append(Middleware(StreamingRoutesRefused))
    if INSTALLED["max_request_bytes"]:
        app.user_middleware.append(Middleware(RequestSizeLimit, max_bytes=INSTALLED["max_request_bytes"]))
    if INSTALLED["fast_tensors"]:
        app.user_middleware.append(Middleware(BinaryTensorMiddleware, data_plane=data_plane))
        app.user_middleware.append(Middleware(DirectJsonMiddleware, data_plane=data_plane))
    return app


def grpc_request_to_types(cls: type, pb_object: Any) -> InferenceRequest:
    """MLServer's ModelInferRequestConverter.to_types, with a request it cannot decode raised as InferenceError
    (gRPC INVALID_ARGUMENT) instead of the INTERNAL that its ValueError, struct.error or pydantic error became.
    Found by tests/e2e/grpc_fuzz.py: a datatype that V2 does not define ('FP8', '', 'STRING'), with raw or
    typed contents, and BYTES raw contents whose length prefixes run past their buffer."""
    try:
        result: InferenceRequest = ORIGINALS["mlserver.grpc.converters.ModelInferRequestConverter.to_types"](
            cls, pb_object
        )
    except MLServerError:
        raise
    except DECODE_ERRORS as err:
        raise InferenceError(f"the request cannot be decoded: {err}") from err
    # MLServer builds the request without validation, so an unknown datatype on typed contents got as far as
    # adaptive batching, whose RequestInput refused it with an INTERNAL.
    for item in result.inputs:
        try:
            Datatype(item.datatype)
        except ValueError:
            known = ", ".join(datatype.value for datatype in Datatype)
            raise InferenceError(f"input {item.name!r}: {item.datatype!r} is not a V2 datatype ({known})") from None
    return result


async def model_infer(self: InferenceServicer, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
    """MLServer's InferenceServicer.ModelInfer, with the requests the direct path takes answered by
    services/serving/grpc_direct.py; the others, and those for a model MLServer does not have, by MLServer's own
    (which answers NOT_FOUND with its message)."""
    try:
        model = await self._data_plane._model_registry.get_model(request.model_name, request.model_version)
    except MLServerError:
        model = None
    if model is not None and grpc_direct.takes(self._data_plane, model, request):
        return await grpc_direct.direct_infer(self, request, context)  # type: ignore[no-any-return]
    original = ORIGINALS["mlserver.grpc.servicers.InferenceServicer.ModelInfer"]
    return await original(self, request, context)  # type: ignore[no-any-return]


@handle_mlserver_error
async def model_ready(self: InferenceServicer, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
    """MLServer's InferenceServicer.ModelReady, with MLServer's errors as their gRPC status (handle_mlserver_error,
    as on its ModelMetadata): a model the server does not have is NOT_FOUND "Model NAME with version  not found"
    (MLServer's message), where 1.7.1 answers UNKNOWN; a client waiting for the wrong name reads why."""
    original = ORIGINALS["mlserver.grpc.servicers.InferenceServicer.ModelReady"]
    return await original(self, request, context)  # type: ignore[no-any-return]


REPLACEMENTS: dict[str, Callable[..., Any]] = {
    "mlserver.grpc.converters.inject_raw": inject_raw,
    "mlserver.batching.requests._merge_data": merge_data,
    "mlserver.batching.adaptive.AdaptiveBatcher._batch_requests": batch_requests,
    "mlserver.rest.server.create_app": create_app,
    "mlserver.grpc.converters.ModelInferRequestConverter.to_types": classmethod(grpc_request_to_types),  # type: ignore[dict-item]
    "mlserver.grpc.servicers.InferenceServicer.ModelInfer": model_infer,
    "mlserver.grpc.servicers.InferenceServicer.ModelReady": model_ready,
}
ORIGINALS = {name: original for name, (_, original, _) in PATCHED.items()}


INSTALLED: dict[str, Any] = {"fast_tensors": False, "max_request_bytes": None, "batcher": "mlserver"}
"""What the last `install` asked for; read by create_app when MLServer builds its REST app."""


BATCHING = "mlserver.batching.adaptive.AdaptiveBatcher._batch_requests"


def install(fast_tensors: bool = True, max_request_bytes: int | None = None, batcher: str = "sandbox") -> None:
    """Replace MLServer's functions named in PATCHED by this module's: with `fast_tensors`, all of them (numpy
    views of raw and binary tensors); without, only those in ALWAYS (the REST app's middlewares, the request-size
    limit when `max_request_bytes` (bytes) is given, and gRPC decode errors as INVALID_ARGUMENT). Adaptive
    batching is `batcher`'s (BATCHERS), whatever `fast_tensors` says. A second call with the same arguments
    changes nothing.

    Raises RuntimeError, listing `problems()`, when the installed MLServer is not the one they fit, and
    ValueError for a `batcher` not in BATCHERS.
    """
    if found := problems():
        raise RuntimeError("MLServer's internals changed, the sandbox's patches do not fit: " + "; ".join(found))
    if batcher not in BATCHERS:
        raise ValueError(f"batcher is {batcher!r}, not one of {', '.join(BATCHERS)}")
    INSTALLED.update(fast_tensors=fast_tensors, max_request_bytes=max_request_bytes, batcher=batcher)
    for name, (owner, _, _) in PATCHED.items():
        replace = batcher == "sandbox" if name == BATCHING else fast_tensors or name in ALWAYS
        setattr(owner, name.rsplit(".", 1)[1], REPLACEMENTS[name] if replace else STATIC_ORIGINALS[name])


class SandboxModelRepository(SchemalessModelRepository):
    """MLServer's default model repository (folders with a model-settings.json), which installs the patches.

    MLServer builds its model repository before its REST and gRPC servers, from settings.json's
    `model_repository_implementation`: the one setting that runs this project's code that early.
    """

    def __init__(
        self, root: str, fast_tensors: bool = True, max_request_bytes: int | None = None, batcher: str = "sandbox"
    ) -> None:
        # They come from settings.json's `model_repository_implementation_args` (ServingSettings.server_settings).
        install(fast_tensors=fast_tensors, max_request_bytes=max_request_bytes, batcher=batcher)
        super().__init__(root)
