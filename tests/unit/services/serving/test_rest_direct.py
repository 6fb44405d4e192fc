"""JSON inference requests on the direct path (services/serving/rest_direct.py), through MLServer's real REST app
with the sandbox's patches and, side by side, the app MLServer builds without them, over the same data plane and
loaded model (the ASGI apps are called directly; no server is started)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
import orjson
import pytest
from mlserver.rest.server import RESTServer
from prometheus_client import REGISTRY

from mlops_sandbox.v2 import LABELS_HEADER
from services.serving import patches
from services.serving.shortcut import Gathered
from tests.unit.services.serving.conftest import Plane
from tests.unit.services.serving.test_binary_rest import post
from tests.unit.services.serving.test_runtime import IMAGES

INFER = "/v2/models/digits/infer"
JSON = {"content-type": "application/json"}
Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture(scope="module")
def apps(plane: Plane) -> tuple[object, object]:
    """(the patched app, MLServer's own): built as `mlserver start` builds its REST app, with the patches
    installed and with `fast_tensors` off, which leaves MLServer's routes to answer every JSON request."""
    patches.install()
    patched = RESTServer(plane.settings, plane.data_plane, plane.handlers)._app
    patches.INSTALLED["fast_tensors"] = False
    try:
        own = RESTServer(plane.settings, plane.data_plane, plane.handlers)._app
    finally:
        patches.INSTALLED["fast_tensors"] = True
    return patched, own


def both(apps: tuple[object, object], body: bytes, headers: dict[str, str] = JSON, path: str = INFER) -> list[Answer]:
    """The patched app's answer, then MLServer's own, to the same request."""

    async def run() -> list[Answer]:
        return [await post(app, path, body, headers) for app in apps]

    return asyncio.run(run())


def request(images: np.ndarray, *, nested: bool = False, **fields: Any) -> bytes:
    """A V2 JSON request for float32 images (N, 1, 28, 28), as a client writes it: the values flat (as tritonclient
    writes them) or nested as the shape."""
    data = images.tolist() if nested else images.ravel().tolist()
    tensor = {"name": "input-0", "shape": list(images.shape), "datatype": "FP32", "data": data}
    return orjson.dumps({"inputs": [tensor], **fields})


@pytest.mark.parametrize("nested", [False, True], ids=["flat data", "nested data"])
@pytest.mark.parametrize("images", [IMAGES[:1], IMAGES], ids=["one image", "three images"])
def test_a_json_request_is_answered_as_mlservers_route_answers_it_byte_for_byte(
    apps: tuple[object, object], direct_calls: list[tuple[int, ...]], images: np.ndarray, nested: bool
) -> None:
    direct, mlserver = both(apps, request(images, nested=nested, id="request-1"))
    assert direct_calls == [images.shape], "the patched app took the direct path, once"
    assert direct[0] == mlserver[0] == 200, direct[2]
    assert direct[2] == mlserver[2]  # names, datatype, shape, parameters, version, id, every value's digits
    assert direct[1] == mlserver[1]  # content type, length and MLServer's CloudEvents headers
    answer = orjson.loads(direct[2])
    assert answer["model_version"] == "7" and answer["id"] == "request-1"
    assert answer["outputs"][0]["shape"] == [len(images), 10] and direct[1]["ce-id"] == "request-1"


def test_a_request_without_an_id_gets_a_new_one_and_mlservers_values(
    apps: tuple[object, object], direct_calls: list[tuple[int, ...]]
) -> None:
    direct, mlserver = both(apps, request(IMAGES))
    assert direct_calls == [IMAGES.shape]
    answers = [orjson.loads(body) for _, _, body in (direct, mlserver)]
    assert uuid.UUID(answers[0]["id"]) and answers[0]["id"] != answers[1]["id"]
    assert direct[1]["ce-requestid"] == answers[0]["id"]
    assert answers[0]["outputs"] == answers[1]["outputs"]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_direct_answer_is_counted_as_mlservers_path_counts_it(
    apps: tuple[object, object], direct_calls: list[tuple[int, ...]]
) -> None:
    served = ("served_model_requests_total", {"model_name": "digits", "model_version": "7"})
    # MLServer labels a request without a version in its path "None", on its own route too.
    succeeded = ("model_infer_request_success_total", {"model": "digits", "version": "None"})
    before = [sample(name, **labels) for name, labels in (served, succeeded)]
    labels = {"model_name": "digits", "model_version": "7"}
    labelled_before = {
        (digit, correct): sample("served_model_labelled_predictions_total", **labels, digit=digit, correct=correct)
        for digit in "0123456789"
        for correct in ("true", "false")
    }
    answer = asyncio.run(post(apps[0], INFER, request(IMAGES[:1], id="r"), {**JSON, LABELS_HEADER: "3"}))
    assert answer[0] == 200 and direct_calls == [(1, 1, 28, 28)]
    assert [sample(name, **labels) for name, labels in (served, succeeded)] == [value + 1 for value in before]
    digit = str(int(np.argmax(orjson.loads(answer[2])["outputs"][0]["data"])))
    correct = str(digit == "3").lower()
    counted = sample("served_model_labelled_predictions_total", **labels, digit=digit, correct=correct)
    assert counted == labelled_before[digit, correct] + 1, "the label in the header was counted against the answer"


def test_requests_that_arrive_together_share_one_forward_pass_and_each_gets_its_answer(
    plane: Plane, apps: tuple[object, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = asyncio.run(plane.data_plane._model_registry.get_model("digits"))
    passes: list[int] = []
    original = model.predict_arrays

    def counted(batches: list[np.ndarray], labels: list[str | None]) -> list[np.ndarray]:
        passes.append(len(batches))
        return original(batches, labels)

    monkeypatch.setattr(model, "predict_arrays", counted)
    # As the sandbox serves (MLSERVER_MODEL_MAX_BATCH_SIZE=16); the test plane's model has MLServer's default, 0.
    monkeypatch.setattr(model, "gathered", Gathered(model, 16))
    served = {"model_name": "digits", "model_version": "7"}
    before = sample("served_model_requests_total", **served)
    bodies = [request(IMAGES[index : index + 1], id=f"r{index}") for index in range(3)]

    async def together() -> list[Answer]:
        return list(await asyncio.gather(*(post(apps[0], INFER, body, JSON) for body in bodies)))

    answers = asyncio.run(together())
    assert passes == [3], "the three requests ran as one forward pass"
    assert sample("served_model_requests_total", **served) == before + 3
    for index, (status, headers, body) in enumerate(answers):
        assert status == 200 and headers["ce-id"] == f"r{index}"
        alone = orjson.loads(both(apps, bodies[index])[1][2])["outputs"][0]["data"]  # MLServer's answer, alone
        together_ = orjson.loads(body)["outputs"][0]["data"]
        np.testing.assert_allclose(together_, alone, rtol=1e-5, atol=1e-7)  # float32, summed in another order
        assert int(np.argmax(together_)) == int(np.argmax(alone))


ONE = {"name": "input-0", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": IMAGES[0].ravel().tolist()}


def json_request(**changes: Any) -> bytes:
    """A request of one image, with an id, and `changes` to its input tensor (None: the field left out)."""
    tensor = {key: value for key, value in {**ONE, **changes}.items() if value is not None}
    return orjson.dumps({"id": "r", "inputs": [tensor]})


@pytest.mark.parametrize(
    ("body", "headers", "path"),
    [
        (orjson.dumps({"id": "r", "inputs": [ONE], "parameters": {"content_type": "np"}}), JSON, INFER),
        (orjson.dumps({"id": "r", "inputs": [ONE], "outputs": [{"name": "output-1"}]}), JSON, INFER),
        (orjson.dumps({"id": "r", "inputs": [ONE, ONE]}), JSON, INFER),
        (json_request(parameters={"content_type": "np"}), JSON, INFER),
        (json_request(shape=[1, 784]), JSON, INFER),
        (json_request(shape=[1.0, 1, 28, 28]), JSON, INFER),
        (json_request(shape=[-1, 1, 28, 28]), JSON, INFER),
        (json_request(shape=[2, 1, 28, 28]), JSON, INFER),
        (json_request(datatype="FP64"), JSON, INFER),
        (json_request(data=["x"] * 784), JSON, INFER),
        (json_request(data=[[0.5] * 783, [0.5]]), JSON, INFER),
        (json_request(data=None), JSON, INFER),
        (json_request(), {"content-type": "text/plain"}, INFER),
        (json_request(), JSON, "/v2/models/nope/infer"),
        (json_request(), JSON, "/v2/models/digits/versions/3/infer"),
        (b'{"id": "r", "inputs": [', JSON, INFER),
        (b"[1, 2]", JSON, INFER),
    ],
    ids=[
        "request parameters",
        "requested outputs",
        "two inputs",
        "input parameters",
        "another shape",
        "a shape of floats",
        "a negative dimension",
        "a shape its data do not fill",
        "another datatype",
        "values that are not numbers",
        "ragged data",
        "no data",
        "not sent as JSON",
        "an unknown model",
        "an unknown version",
        "a body that is not JSON",
        "not an object",
    ],
)
def test_what_the_direct_path_does_not_take_gets_mlservers_own_answer(
    apps: tuple[object, object], direct_calls: list[tuple[int, ...]], body: bytes, headers: dict[str, str], path: str
) -> None:
    direct, mlserver = both(apps, body, headers, path)
    assert direct_calls == []
    assert (direct[0], direct[2]) == (mlserver[0], mlserver[2])  # the body reached MLServer's route as it came
