"""gRPC `ModelInfer` straight from the protobuf to the direct path, for the requests that path takes.

MLServer 1.7.1 answers a gRPC inference request by building pydantic types from the protobuf, passing them
through its data plane (model lookup, CloudEvents headers, response cache, metrics), adaptive batching's
queue and the runtime's codecs, and building a protobuf answer back. For the sandbox's model that is most of
the server's time: answered here, (d) served 1.35x to 1.54x the single images a second at 16 clients, and
1.4x to 2.3x at one (2 cores, runs before and after alternating; docs/performance.md, "gRPC straight to the
direct path").

A request is answered here when it is one input tensor sent as `raw_input_contents` (tritonclient's gRPC
default), with no request or input parameters and no requested outputs, to a model whose direct path
(services/serving/direct.py) takes its datatype and shape, while MLServer's response cache is off. Its bytes
are read with np.frombuffer and run through the module, in one forward pass with the shortcut requests that
reached the event loop with it (`shortcut.Gathered`), and the answer is the protobuf that MLServer's path
builds for the same request, field for field (tests compare the two): the output `output-1` as raw bytes with
content type `np`, the registry version as `model_version`, the request's id or a new one, and MLServer's
CloudEvents headers as trailing metadata. MLServer's own model metrics (`model_infer_request_*`, through its
data plane's `_infer_contextmanager`) and the runtime's counters count it as they count every other request;
its gRPC interceptors (Prometheus, logging) wrap it as before. Bad bytes are INVALID_ARGUMENT with the reason,
as on MLServer's path with the sandbox's patches.

What it does not do: MLServer's adaptive batching, whose queue, wait and pydantic merge and split served less
at 16 clients than these requests one at a time (1,476 to 1,552 single images a second against 883-888,
side by side; docs/performance.md). Every other request takes MLServer's ModelInfer unchanged, batching
included; SANDBOX_SERVING_DIRECT_PATH=false or SANDBOX_SERVING_FAST_TENSORS=false sends all of them there.

What it shares with REST JSON's shortcut (services/serving/rest_direct.py) is in services/serving/shortcut.py.
This module imports neither torch nor MLflow: MLServer imports it with the patches, before it loads a model.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.servicers import InferenceServicer
from mlserver.grpc.utils import handle_mlserver_error, to_metadata
from mlserver.handlers import DataPlane
from mlserver.utils import generate_uuid

from mlops_sandbox.v2 import LABELS_HEADER
from services.serving.shortcut import CONTENT_TYPE, DATATYPES, OUTPUT_NAME, cloudevents_headers, direct_model
from services.serving.tensors import DTYPES, to_bytes

CONTENT_TYPE_PARAMETER = pb.InferParameter(string_param=CONTENT_TYPE)


def takes(data_plane: DataPlane, model: Any, request: pb.ModelInferRequest) -> bool:
    """Whether `model` (MLServer's loaded model for `request`) answers `request` on the direct path: see the
    module docstring for the conditions."""
    direct = direct_model(data_plane, model)
    if direct is None:
        return False
    if request.parameters or request.outputs or len(request.inputs) != 1 or len(request.raw_input_contents) != 1:
        return False
    tensor = request.inputs[0]
    if tensor.parameters or tensor.HasField("contents"):
        return False
    dtype = DTYPES.get(tensor.datatype)
    return dtype is not None and bool(direct.takes(dtype, list(tensor.shape)))


@handle_mlserver_error
async def direct_infer(
    self: InferenceServicer, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
) -> pb.ModelInferResponse:
    """Answer `request` on the direct path, inside MLServer's data plane's metrics and model context; MLServer's
    errors become their gRPC status as on its own path (InferenceError: INVALID_ARGUMENT)."""
    data_plane: DataPlane = self._data_plane
    tensor = request.inputs[0]
    # gRPC metadata keys are lower case on the wire (HTTP/2), as LABELS_HEADER is.
    labels = next((value for key, value in context.invocation_metadata() or () if key == LABELS_HEADER), None)
    async with data_plane._infer_contextmanager(request.model_name, request.model_version) as model:
        images = model.raw_images(tensor.name, tensor.datatype, list(tensor.shape), request.raw_input_contents[0])
        answer = await model.gathered.predict(images, labels)
        response = answer_of(model.name, model.registry_version, request.id or generate_uuid(), answer)
        # MLServer's path sends the CloudEvents headers its data plane's middleware sets as trailing metadata.
        if headers := cloudevents_headers(data_plane, model, response.id):
            context.set_trailing_metadata(to_metadata(headers))
    return response


def answer_of(model_name: str, model_version: str | None, request_id: str, answer: np.ndarray) -> pb.ModelInferResponse:
    """The ModelInferResponse MLServer's path builds for a raw request answered with `answer` (a numeric numpy
    array): one output, `output-1`, its bytes in `raw_output_contents` (little-endian, row-major)."""
    datatype = DATATYPES[answer.dtype.newbyteorder("<")]
    response = pb.ModelInferResponse(
        model_name=model_name,
        id=request_id,
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(
                name=OUTPUT_NAME,
                datatype=datatype,
                shape=answer.shape,
                parameters={"content_type": CONTENT_TYPE_PARAMETER},
                contents=pb.InferTensorContents(),
            )
        ],
        raw_output_contents=[to_bytes(datatype, answer)],
        parameters={"content_type": CONTENT_TYPE_PARAMETER},
    )
    if model_version is not None:
        response.model_version = model_version
    return response
