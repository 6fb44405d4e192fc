"""The sandbox's changes to MLServer's internals (services/serving/patches.py): that they still fit the pinned
MLServer, that raw gRPC tensors become numpy views with the same answers as MLServer's lists, and that adaptive
batching waits for company only when there is some, and hands a lone request to the model as it came."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import mlserver
import mlserver.batching.requests
import mlserver.grpc.converters
import mlserver.raw
import numpy as np
import pytest
import tomllib
from mlserver import MLModel, ModelSettings
from mlserver.batching.adaptive import AdaptiveBatcher
from mlserver.batching.requests import BatchedRequests
from mlserver.context import model_context
from mlserver.errors import InferenceError
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ModelInferRequestConverter
from mlserver.grpc.servicers import InferenceServicer
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

from services.serving import patches
from tests.unit.services.serving.test_runtime import IMAGES, probabilities, request, runtime

PYPROJECT = Path(__file__).resolve().parents[4] / "pyproject.toml"


def raw_request(images: np.ndarray, raw: bytes | None = None) -> pb.ModelInferRequest:
    """A gRPC request as tritonclient.grpc sends it: the tensor's bytes in raw_input_contents."""
    tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP32", shape=list(images.shape))
    contents = raw if raw is not None else images.astype("<f4").tobytes()
    return pb.ModelInferRequest(model_name="digits", inputs=[tensor], raw_input_contents=[contents])


def test_the_patches_fit_the_pinned_mlserver() -> None:
    """Fails when the mlserver pin moves or a patched function's parameters change: the patches must be
    rewritten (or dropped) for the new MLServer, not carried over."""
    pins = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["ml"]
    assert f"mlserver=={patches.MLSERVER_VERSION}" in pins
    assert mlserver.__version__ == patches.MLSERVER_VERSION
    assert patches.problems() == []


def test_install_refuses_an_mlserver_it_was_not_written_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlserver, "__version__", "1.8.0")
    with pytest.raises(RuntimeError, match=re.escape("mlserver is 1.8.0, the patches were written for 1.7.1")):
        patches.install()


def test_install_replaces_mlservers_functions_once() -> None:
    patches.install()
    patches.install()
    assert mlserver.grpc.converters.inject_raw is patches.inject_raw
    assert mlserver.batching.requests._merge_data is patches.merge_data
    assert patches.ORIGINALS["mlserver.grpc.converters.inject_raw"] is mlserver.raw.inject_raw
    assert InferenceServicer.ModelInfer is patches.model_infer


def test_without_fast_tensors_grpc_requests_take_mlservers_own_model_infer() -> None:
    try:
        patches.install(fast_tensors=False)
        original = patches.ORIGINALS["mlserver.grpc.servicers.InferenceServicer.ModelInfer"]
        assert InferenceServicer.ModelInfer is original
        assert mlserver.grpc.converters.inject_raw is mlserver.raw.inject_raw
    finally:
        patches.install()


def test_raw_grpc_tensors_are_numpy_views_with_mlflows_answers(saved_model: Path) -> None:
    patches.install()
    payload = ModelInferRequestConverter.to_types(raw_request(IMAGES))
    data = payload.inputs[0].data.root
    assert isinstance(data, np.ndarray) and data.dtype == np.float32 and not data.flags.writeable
    assert np.array_equal(data, IMAGES.ravel())
    direct, through_mlflow = runtime(saved_model), runtime(saved_model, direct_path=False)
    as_lists = probabilities(direct, request(IMAGES))
    assert np.array_equal(probabilities(direct, payload), as_lists)
    assert np.array_equal(
        probabilities(through_mlflow, ModelInferRequestConverter.to_types(raw_request(IMAGES))), as_lists
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (IMAGES.tobytes()[:-4], "needs 9408 bytes, the request carries 9404"),
        (IMAGES.astype(np.float64).tobytes(), "needs 9408 bytes, the request carries 18816"),
    ],
    ids=["short", "fp64-bytes"],
)
def test_raw_bytes_that_do_not_fit_the_shape_are_a_client_error(raw: bytes, reason: str) -> None:
    patches.install()
    with pytest.raises(InferenceError, match=reason) as refused:
        ModelInferRequestConverter.to_types(raw_request(IMAGES, raw))
    assert refused.value.status_code == 400  # gRPC INVALID_ARGUMENT


def test_batching_merges_raw_and_json_requests_in_order() -> None:
    """Adaptive batching may merge a raw request with a JSON one: the batch holds both, in order."""
    patches.install()
    raw = ModelInferRequestConverter.to_types(raw_request(IMAGES[:2]))
    merged = BatchedRequests({"raw": raw, "json": request(IMAGES[2:])}).merged_request
    assert merged.inputs[0].shape == [3, 1, 28, 28]
    values = np.asarray(merged.inputs[0].data.root, dtype=np.float32)
    assert np.array_equal(values, IMAGES.ravel())


def test_merged_arrays_reach_the_batched_request_unvalidated(monkeypatch: pytest.MonkeyPatch) -> None:
    # Validation would build a new TensorData around the array, after trying it as a list of 25,088 floats
    # (869 us for a batch of 32); the batched RequestInput must hold the very TensorData that merge_data made.
    patches.install()
    made = []

    def spy(all_data: list[Any]) -> Any:
        made.append(patches.merge_data(all_data))
        return made[-1]

    monkeypatch.setattr(mlserver.batching.requests, "_merge_data", spy)
    first, second = (ModelInferRequestConverter.to_types(raw_request(part)) for part in (IMAGES[:2], IMAGES[2:]))
    merged = BatchedRequests({"a": first, "b": second}).merged_request
    assert merged.inputs[0].data is made[0]
    assert np.array_equal(np.asarray(merged.inputs[0].data.root), IMAGES.ravel())


def test_json_requests_still_merge_as_mlserver_does() -> None:
    patches.install()
    merged = BatchedRequests({"a": request(IMAGES[:1]), "b": request(IMAGES[1:])}).merged_request
    assert isinstance(merged.inputs[0].data.root, list)
    assert merged.inputs[0].data.root == IMAGES.ravel().tolist()


def test_a_request_without_raw_entries_for_its_inputs_is_refused() -> None:
    patches.install()
    empty = [request(IMAGES, data=[]).inputs[0], request(IMAGES, data=[]).inputs[0]]
    with pytest.raises(InferenceError, match="raw_input_contents has no entry left"):
        patches.inject_raw(empty, [IMAGES.tobytes()])


@pytest.mark.parametrize("fast_tensors", [True, False])
@pytest.mark.parametrize(
    ("datatype", "raw", "reason"),
    [
        ("FP8", None, "'FP8' is not a V2 datatype"),
        ("STRING", None, "'STRING' is not a V2 datatype"),
        ("", b"\x00" * 16, "cannot be decoded"),
        # BYTES raw contents are length-prefixed; this prefix claims far more bytes than follow it.
        ("BYTES", b"\xff\xff\xff\x7f" + b"x" * 12, "cannot be decoded"),
    ],
)
def test_a_grpc_request_that_cannot_be_decoded_is_a_client_error(
    datatype: str, raw: bytes | None, reason: str, fast_tensors: bool
) -> None:
    # MLServer 1.7.1 answered each with INTERNAL (found by tests/e2e/grpc_fuzz.py); InferenceError is 400 and
    # INVALID_ARGUMENT, with the patches on or off.
    patches.install(fast_tensors=fast_tensors)
    tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype=datatype, shape=[1, 4])
    if raw is None:
        tensor.contents.int_contents.extend([1, 2, 3, 4])
    message = pb.ModelInferRequest(model_name="digits", inputs=[tensor])
    if raw is not None:
        message.raw_input_contents.append(raw)
    with pytest.raises(InferenceError, match=re.escape(reason)):
        ModelInferRequestConverter.to_types(message)
    patches.install()


class Echo(MLModel):
    """Answers each batch with its input, and records the batch sizes it was given."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self.sizes.append(payload.inputs[0].shape[0])
        self.payloads.append(payload)
        tensor = payload.inputs[0]
        output = ResponseOutput(name="echo", shape=tensor.shape, datatype=tensor.datatype, data=tensor.data)
        return InferenceResponse(model_name=self.name, outputs=[output])


def one_value(value: float) -> InferenceRequest:
    return InferenceRequest(inputs=[RequestInput(name="x", shape=[1, 1], datatype="FP32", data=[value])])


def echo_batcher(max_batch_time: float) -> tuple[Echo, AdaptiveBatcher]:
    settings = ModelSettings(name="echo", implementation=Echo, max_batch_size=16, max_batch_time=max_batch_time)
    model = Echo(settings)
    model.sizes, model.payloads = [], []
    return model, AdaptiveBatcher(model)


@pytest.mark.parametrize("batcher", ["sandbox", "mlserver"])
def test_one_client_at_a_time_waits_for_company_only_with_mlservers_batcher(batcher: str) -> None:
    """Five requests one after the other, with 0.5 s of batch time: MLServer waits it out on each request; with
    the sandbox's, none waits, since no batch before had company; and the model gets each request as it came."""
    patches.install(batcher=batcher)
    model, batched = echo_batcher(max_batch_time=0.5)

    sent = [one_value(i) for i in range(5)]
    for i, one in enumerate(sent):
        one.id = f"request-{i}"

    async def one_after_the_other() -> list[InferenceResponse]:
        with model_context(model.settings):  # as MLServer's dataplane sets it, for its batch-size metric
            return [await batched.predict(one) for one in sent]

    began = time.monotonic()
    answers = asyncio.run(one_after_the_other())
    took = time.monotonic() - began
    assert [answer.outputs[0].data.root[0] for answer in answers] == [0, 1, 2, 3, 4]
    assert [answer.id for answer in answers] == [one.id for one in sent]
    assert model.sizes == [1] * 5
    # The sandbox's batcher hands a lone request over as it came; MLServer's builds a merged copy of it.
    assert [payload is one for payload, one in zip(model.payloads, sent, strict=True)] == [batcher == "sandbox"] * 5
    if batcher == "mlserver":
        assert took >= 5 * 0.5
    else:
        assert took < 0.5, f"{took:.2f} s: a lone request waited for company"


def test_requests_that_come_together_are_batched_and_the_next_batch_waits_for_company() -> None:
    patches.install()
    model, batched = echo_batcher(max_batch_time=0.5)

    async def staggered(first: int) -> list[float]:
        async def send(i: int) -> float:
            await asyncio.sleep(0.02 * (i - first))  # within the batch time of the first
            return (await batched.predict(one_value(i))).outputs[0].data.root[0]

        return list(await asyncio.gather(*(send(i) for i in range(first, first + 4))))

    async def two_waves() -> list[float]:
        with model_context(model.settings):
            together = await asyncio.gather(*(batched.predict(one_value(i)) for i in range(4)))
            return [answer.outputs[0].data.root[0] for answer in together] + await staggered(4)

    assert asyncio.run(two_waves()) == list(range(8))
    # The first four were queued together; the batch after them waited, and the staggered four joined it.
    assert model.sizes == [4, 4]


def test_an_unknown_batcher_is_refused() -> None:
    with pytest.raises(ValueError, match="batcher is 'never'"):
        patches.install(batcher="never")
