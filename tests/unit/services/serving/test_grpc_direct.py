"""gRPC ModelInfer on the direct path (services/serving/grpc_direct.py), over real gRPC: MLServer's servicer with
the sandbox's patches and, side by side, MLServer's own ModelInfer on the same data plane, each in a grpc.aio
server of this process. tritonclient's gRPC client (whose protobuf types clash with MLServer's in one process)
reads these answers in tests/e2e/test_tritonclient.py, against the real server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc
from mlserver.grpc.servicers import InferenceServicer
from prometheus_client import REGISTRY

from mlops_sandbox.v2 import LABELS_HEADER
from services.serving import patches
from tests.unit.services.serving.conftest import Plane
from tests.unit.services.serving.test_runtime import IMAGES
from tools.ports import free_port


class MLServersPath(InferenceServicer):
    """MLServer 1.7.1's servicer with its own ModelInfer (the sandbox's other patches in place): what every
    request took before the direct path, and what the requests it does not take still take."""

    ModelInfer = patches.ORIGINALS["mlserver.grpc.servicers.InferenceServicer.ModelInfer"]


@dataclass
class Servers:
    direct: str
    mlserver: str
    loop: asyncio.AbstractEventLoop


@pytest.fixture(scope="module")
def servers(plane: Plane) -> Iterator[Servers]:
    """Two grpc.aio servers on loopback, on one event loop in a thread of their own: the patched servicer and
    MLServersPath, over the same data plane and loaded model."""
    patches.install()  # the servicer's ModelInfer is the patched one whatever a test before installed
    loop = asyncio.new_event_loop()
    ports = free_port(), free_port()
    started = threading.Event()
    built: list[grpc.aio.Server] = []

    async def serve() -> None:
        for servicer, port in zip(
            (InferenceServicer(plane.data_plane, plane.handlers), MLServersPath(plane.data_plane, plane.handlers)),
            ports,
            strict=True,
        ):
            server = grpc.aio.server()
            dataplane_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            built.append(server)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=30)
    assert started.is_set()
    yield Servers(f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", loop)
    for server in built:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)


def raw_request(images: np.ndarray, raw: bytes | None = None, **fields: Any) -> pb.ModelInferRequest:
    """A request as tritonclient.grpc sends it by default: the tensor's bytes in raw_input_contents."""
    tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP32", shape=list(images.shape))
    contents = raw if raw is not None else images.astype("<f4").tobytes()
    return pb.ModelInferRequest(model_name="digits", inputs=[tensor], raw_input_contents=[contents], **fields)


def typed_request(images: np.ndarray) -> pb.ModelInferRequest:
    """The same tensor with its values in `contents.fp32_contents`, which MLServer's path answers."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input-0",
        datatype="FP32",
        shape=list(images.shape),
        contents=pb.InferTensorContents(fp32_contents=images.ravel().tolist()),
    )
    return pb.ModelInferRequest(model_name="digits", inputs=[tensor])


def infer(
    target: str, request: pb.ModelInferRequest, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[pb.ModelInferResponse, dict[str, str]]:
    """One ModelInfer call: the answer and its trailing metadata."""
    with grpc.insecure_channel(target) as channel:
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(request, metadata=metadata, timeout=30)
    return response, dict(call.trailing_metadata() or ())


def refusal(target: str, request: pb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        infer(target, request)
    return raised.value


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_raw_request_is_answered_as_mlservers_path_answers_it_field_for_field(
    servers: Servers, direct_calls: list[tuple[int, ...]]
) -> None:
    request = raw_request(IMAGES, id="request-1")
    direct, direct_trailers = infer(servers.direct, request)
    mlserver, mlserver_trailers = infer(servers.mlserver, request)
    assert direct_calls == [IMAGES.shape], "the patched servicer took the direct path, once"
    assert direct == mlserver  # every field: names, datatype, shape, parameters, version, id, raw bytes
    assert direct.model_version == "7" and direct.id == "request-1"
    assert direct_trailers == mlserver_trailers and direct_trailers["ce-id"] == "request-1"
    answer = np.frombuffer(direct.raw_output_contents[0], dtype="<f4").reshape(3, 10)
    typed, _ = infer(servers.mlserver, typed_request(IMAGES))  # values sent as a list, answered as one
    assert np.array_equal(answer, np.asarray(typed.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(3, 10))


def test_each_answer_is_counted_by_mlserver_and_by_version_with_its_labels(
    servers: Servers, direct_calls: list[tuple[int, ...]]
) -> None:
    served = ("served_model_requests_total", {"model_name": "digits", "model_version": "7"})
    success = ("model_infer_request_success_total", {"model": "digits", "version": ""})
    before = [sample(name, **labels) for name, labels in (served, success)]
    response, _ = infer(servers.direct, raw_request(IMAGES), metadata=((LABELS_HEADER, "0,1,2"),))
    digits = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(3, 10).argmax(axis=1)
    assert direct_calls == [IMAGES.shape]
    assert [sample(name, **labels) for name, labels in (served, success)] == [value + 1 for value in before]
    for digit, label in zip(digits.tolist(), (0, 1, 2), strict=True):
        labels = {"model_name": "digits", "model_version": "7", "digit": str(digit)}
        assert sample("served_model_labelled_predictions_total", **labels, correct=str(digit == label).lower()) >= 1


def test_bytes_that_do_not_fit_the_shape_are_invalid_argument_and_counted_as_refused(
    servers: Servers, direct_calls: list[tuple[int, ...]]
) -> None:
    refused = {"model_name": "digits", "model_version": "7", "kind": "client"}
    before = sample("served_model_failed_requests_total", **refused)
    error = refusal(servers.direct, raw_request(IMAGES, raw=IMAGES.tobytes()[:-4]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 9408 bytes, the request carries 9404" in (error.details() or "")
    assert sample("served_model_failed_requests_total", **refused) == before + 1
    response, _ = infer(servers.direct, raw_request(IMAGES))  # and the server goes on
    assert len(response.raw_output_contents[0]) == 3 * 10 * 4
    assert direct_calls == [IMAGES.shape], "the refused request reached no forward pass"


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (typed_request(IMAGES), "values in contents, not raw"),
        (raw_request(IMAGES[0]), "a shape the signature does not take"),
        (raw_request(IMAGES, parameters={"content_type": pb.InferParameter(string_param="np")}), "parameters"),
        (
            raw_request(IMAGES, outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="output-1")]),
            "requested outputs",
        ),
    ],
)
def test_other_requests_take_mlservers_path_and_get_its_answer(
    servers: Servers, direct_calls: list[tuple[int, ...]], request_: pb.ModelInferRequest, why: str
) -> None:
    outcomes = []
    for target in (servers.direct, servers.mlserver):
        try:
            outcomes.append(infer(target, request_)[0])
        except grpc.RpcError as err:
            outcomes.append((err.code(), err.details()))
    assert direct_calls == [], why
    assert outcomes[0] == outcomes[1] or _same_but_id(*outcomes), why


def _same_but_id(first: object, second: object) -> bool:
    if not isinstance(first, pb.ModelInferResponse) or not isinstance(second, pb.ModelInferResponse):
        return False
    first.id = second.id = ""
    return first == second


def test_a_model_mlserver_does_not_have_is_not_found_with_mlservers_message(servers: Servers) -> None:
    request = raw_request(IMAGES)
    request.model_name = "no-such-model"
    direct, mlserver = refusal(servers.direct, request), refusal(servers.mlserver, request)
    assert direct.code() == mlserver.code() == grpc.StatusCode.NOT_FOUND
    assert direct.details() == mlserver.details()


def test_model_ready_for_a_model_the_server_does_not_have_is_not_found_with_its_name(servers: Servers) -> None:
    with grpc.insecure_channel(servers.direct) as channel:
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelReady(pb.ModelReadyRequest(name="no-such-model"), timeout=30)
        # MLServer 1.7.1 alone answers UNKNOWN "Unexpected <class 'mlserver.errors.ModelNotFound'>: ..."
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert raised.value.details() == "Model no-such-model with version  not found"
        assert stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=30).ready
