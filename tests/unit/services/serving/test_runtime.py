"""The serving runtime in-process: its settings files, the direct PyTorch path, and its answers to bad input.

A real MLflow PyTorch model (the shipped architecture, untrained) is saved to a temporary folder and
loaded by the real MLServer runtime class; no server is started.
"""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
from mlserver.errors import InferenceError
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, Parameters, RequestInput
from prometheus_client import REGISTRY

from services.serving import runtime as runtime_module
from services.serving.direct import DirectTorchModel
from services.serving.heap import HeapTrimmer
from services.serving.model_store import ModelStore
from services.serving.runtime import RegistryModelRuntime
from services.serving.settings import ServingSettings
from tests.unit.services.serving.conftest import SIGNATURE
from training.model import build_model, for_serving

IMAGES = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
ONE = IMAGES[:1].ravel().tolist()


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture logged as the training job logs it: a torch.export program (training/log.py)."""
    path = tmp_path_factory.mktemp("exported") / "model"
    mlflow.pytorch.save_model(
        for_serving(build_model((64,), 0.1, seed=1)),
        str(path),
        signature=SIGNATURE,
        input_example=IMAGES,
        serialization_format="pt2",
        pip_requirements=[],
    )
    return path


def runtime(model_dir: Path, **extra: object) -> RegistryModelRuntime:
    settings = ModelSettings(
        name="digits",
        implementation=RegistryModelRuntime,
        parameters=ModelParameters(uri=str(model_dir), extra={"registry_version": "7", **extra}),
    )
    loaded = RegistryModelRuntime(settings)
    asyncio.run(loaded.load())
    return loaded


def request(images: np.ndarray, datatype: str = "FP32", **input_fields: object) -> InferenceRequest:
    """A V2 request for `images`; `input_fields` override the input's fields (data, parameters)."""
    fields: dict[str, object] = {"data": images.ravel().tolist(), **input_fields}
    tensor = RequestInput(name="input-0", shape=list(images.shape), datatype=datatype, **fields)  # type: ignore[arg-type]
    return InferenceRequest(inputs=[tensor])


def served_count() -> float:
    labels = {"model_name": "digits", "model_version": "7"}
    return REGISTRY.get_sample_value("served_model_requests_total", labels) or 0.0


def probabilities(model: RegistryModelRuntime, payload: InferenceRequest) -> np.ndarray:
    before = served_count()
    response = asyncio.run(model.predict(payload))
    assert response.model_version == "7"
    assert served_count() == before + 1, "each answer is counted under its registry version"
    output = response.outputs[0]
    return np.asarray(output.data.root, dtype=np.float32).reshape(output.shape)


def test_direct_path_answers_exactly_what_mlflow_answers(saved_model: Path) -> None:
    direct, through_mlflow = runtime(saved_model), runtime(saved_model, direct_path=False)
    assert direct.direct is not None and through_mlflow.direct is None
    expected = mlflow.pyfunc.load_model(str(saved_model)).predict(IMAGES)
    for images in (IMAGES, IMAGES[:1]):
        assert np.array_equal(probabilities(direct, request(images)), probabilities(through_mlflow, request(images)))
    assert np.array_equal(probabilities(direct, request(IMAGES)), expected)
    # Raw gRPC and binary REST tensors arrive as read-only numpy views (services/serving/tensors.py).
    view = np.frombuffer(IMAGES.tobytes(), dtype="<f4")
    for model in (direct, through_mlflow):
        assert np.array_equal(probabilities(model, request(IMAGES, data=view)), expected)


def test_tritonclients_json_parameter_is_not_passed_to_the_model_as_params(
    saved_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # tritonclient.http's JSON request names no output and so asks for binary outputs; MLflow warned once per
    # request that it ignores `params` the signature does not declare.
    tritonclient_json = InferenceRequest(inputs=request(IMAGES).inputs, parameters={"binary_data_output": True})
    expected = mlflow.pyfunc.load_model(str(saved_model)).predict(IMAGES)
    with caplog.at_level("WARNING"):
        for model in (runtime(saved_model), runtime(saved_model, direct_path=False)):
            assert np.array_equal(probabilities(model, tritonclient_json), expected)
    assert not [record.message for record in caplog.records if "params" in record.getMessage()]


def test_direct_path_runs_a_torch_export_program_with_mlflows_answers(exported_model: Path) -> None:
    direct, through_mlflow = runtime(exported_model), runtime(exported_model, direct_path=False)
    assert direct.direct is not None and through_mlflow.direct is None
    # The direct path runs a module of its own, without the per-call input checks, on the same weights as MLflow's
    # copy, not a second set.
    assert direct.direct.module is not direct._model.get_raw_model()
    assert not hasattr(direct.direct.module, "_guards_fn")
    mlflow_weights = {t.data_ptr() for t in direct._model.get_raw_model().state_dict().values()}
    assert {t.data_ptr() for t in direct.direct.module.state_dict().values()} == mlflow_weights
    images = np.random.default_rng(1).random((10_000, 1, 28, 28), dtype=np.float32)
    for batch in (1, 3, 32, 10_000):
        view = np.frombuffer(images[:batch].tobytes(), dtype="<f4")  # as raw gRPC tensors arrive
        answer = probabilities(direct, request(images[:batch], data=view))
        assert answer.shape == (batch, 10)
        assert np.array_equal(answer, probabilities(through_mlflow, request(images[:batch], data=view)))
    # What the direct path does not take still gets MLflow's checks and its reason.
    with pytest.raises(InferenceError, match="does not match"):
        asyncio.run(direct.predict(request(IMAGES.reshape(3, 784))))


@pytest.mark.parametrize(
    ("payload", "accepted"),
    [
        (request(IMAGES), True),
        (request(IMAGES.astype(np.float64), datatype="FP64"), False),
        (request(IMAGES.reshape(3, 784)), False),
        (request(IMAGES.reshape(3, 1, 14, 56)), False),
        (request(IMAGES, parameters={"content_type": "pd"}), False),
        (InferenceRequest(inputs=[request(IMAGES).inputs[0]] * 2), False),
        (InferenceRequest(inputs=request(IMAGES).inputs, parameters={"temperature": 2}), False),
        (InferenceRequest(inputs=request(IMAGES).inputs, parameters={"binary_data_output": True}), True),
        (
            InferenceRequest(inputs=request(IMAGES).inputs, parameters={"binary_data_output": True, "temperature": 2}),
            False,
        ),
    ],
    ids=[
        "matching",
        "fp64",
        "flat",
        "other-shape",
        "pandas",
        "two-inputs",
        "parameters",
        "tritonclient-json",
        "tritonclient-json-and-parameters",
    ],
)
def test_direct_path_takes_only_requests_that_match_the_signature(
    saved_model: Path, payload: InferenceRequest, accepted: bool
) -> None:
    direct = DirectTorchModel.of(mlflow.pyfunc.load_model(str(saved_model)))
    assert direct is not None
    assert direct.accepts(payload) is accepted


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (request(IMAGES.astype(np.float64), datatype="FP64"), "dtype of input float64 does not match"),
        (request(IMAGES.reshape(3, 784)), "Shape of input (3, 784) does not match"),
        (request(IMAGES, data=[0.5] * 10), "declares shape [3, 1, 28, 28] (2352 values) but carries 10"),
        (
            InferenceRequest(inputs=[RequestInput(name="input-0", shape=[], datatype="FP32", data=[0.5])]),
            "declares shape []: a tensor has at least one dimension",
        ),
        (request(IMAGES, data={"a": 1}), "a list of values, not an object"),
        (request(IMAGES, data="abc"), "a list of values, not a string ('abc')"),
        (InferenceRequest(inputs=[]), "the model takes one input tensor; the request has 0"),
        (request(IMAGES, datatype="FP32", data=["x"] * 2352), "cannot decode"),
        (
            InferenceRequest(
                inputs=[
                    RequestInput(
                        name="input-0", shape=[-1, 1, 28, 28], datatype="FP32", data=IMAGES[:1].ravel().tolist()
                    )
                ]
            ),
            "declares shape [-1, 1, 28, 28]: the V2 protocol allows no negative dimension",
        ),
    ],
    ids=[
        "fp64",
        "flat",
        "too-little-data",
        "rank-0",
        "object-data",
        "string-data",
        "no-input",
        "strings",
        "negative-dimension",
    ],
)
def test_bad_input_is_a_client_error_with_the_reason(saved_model: Path, payload: InferenceRequest, reason: str) -> None:
    with pytest.raises(InferenceError) as raised:
        asyncio.run(runtime(saved_model).predict(payload))
    assert raised.value.status_code == 400
    assert reason in str(raised.value)
    assert len(str(raised.value)) < 500, "the message must not echo the whole input"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model_name": "digits", "model_version": "7", **labels}) or 0.0


def labelled_request(labels: str) -> InferenceRequest:
    return InferenceRequest(inputs=request(IMAGES).inputs, parameters=Parameters(headers={"X-Sandbox-Labels": labels}))


def test_labelled_requests_count_right_and_wrong_digits_by_version(saved_model: Path) -> None:
    """A shadow copy's accuracy comes from these counts: no client sees its answers."""
    model = runtime(saved_model)
    digits = probabilities(model, request(IMAGES)).argmax(axis=1)
    truth = [int(digits[0]), int(digits[1]), (int(digits[2]) + 1) % 10]  # two right, one wrong
    name = "served_model_labelled_predictions_total"
    before = {(d, c): sample(name, digit=str(d), correct=c) for d in set(digits.tolist()) for c in ("true", "false")}

    asyncio.run(model.predict(labelled_request(",".join(map(str, truth)))))

    grown = {key: sample(name, digit=str(key[0]), correct=key[1]) - value for key, value in before.items()}
    assert sum(v for (_, c), v in grown.items() if c == "true") == 2
    assert grown[(int(digits[2]), "false")] == 1 and sum(grown.values()) == 3


@pytest.mark.parametrize(
    "labels", ["1,2", "1,2,x", "1,2,10", ""], ids=["too-few", "not-digits", "not-a-digit", "empty"]
)
def test_a_malformed_labels_header_is_counted_nowhere_and_still_answered(saved_model: Path, labels: str) -> None:
    model = runtime(saved_model)
    name = "served_model_labelled_predictions_total"
    total = lambda: sum(sample(name, digit=str(d), correct=c) for d in range(10) for c in ("true", "false"))  # noqa: E731
    before = total()
    assert probabilities(model, labelled_request(labels)).shape == (3, 10)
    assert total() == before


def test_refused_requests_are_counted_by_version(saved_model: Path) -> None:
    model = runtime(saved_model)
    before = sample("served_model_failed_requests_total", kind="client")
    with pytest.raises(InferenceError):
        asyncio.run(model.predict(request(IMAGES.reshape(3, 784))))
    assert sample("served_model_failed_requests_total", kind="client") == before + 1


def test_requests_are_checked_before_whatever_wraps_predict(saved_model: Path) -> None:
    """MLServer's adaptive batching sets `predict` to a wrapper that merges requests first, and fails with an
    IndexError on a request of shape []; the check runs before it."""
    model = runtime(saved_model)
    merged: list[InferenceRequest] = []

    async def batching(payload: InferenceRequest) -> object:
        merged.append(payload)
        raise IndexError("list index out of range")

    model.predict = batching  # type: ignore[method-assign]
    scalar = InferenceRequest(inputs=[RequestInput(name="input-0", shape=[], datatype="FP32", data=[0.5])])
    with pytest.raises(InferenceError, match="at least one dimension"):
        asyncio.run(model.predict(scalar))
    assert merged == []


def test_settings_reach_mlserver_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVER_MODEL_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("SANDBOX_SERVING_DIRECT_PATH", "false")
    settings = ServingSettings()
    store = ModelStore(tmp_path, "digits", settings.server_settings, settings.runtime_settings, settings.model_settings)
    (tmp_path / "versions" / "4").mkdir(parents=True)
    (tmp_path / "versions" / "4" / "MLmodel").write_text("already downloaded\n")  # prepare() downloads nothing

    folder = store.prepare("4", "@production")

    server = json.loads((folder / "settings.json").read_text())
    assert server == {
        "parallel_workers": 0,
        "debug": False,
        "grpc_max_message_length": 64 * 2**20,
        "model_repository_implementation": "services.serving.patches.SandboxModelRepository",
        # One limit for both protocols: gRPC's message length, and the REST body limit the patches install.
        "model_repository_implementation_args": {
            "fast_tensors": True,
            "max_request_bytes": 64 * 2**20,
            "batcher": "sandbox",
        },
    }
    model = json.loads((folder / "model-settings.json").read_text())
    assert (model["max_batch_size"], model["max_batch_time"]) == (8, 0.0002)
    assert model["parameters"]["extra"] == {
        "registry_version": "4",
        "registry_uri": "models:/digits/4",
        "followed_ref": "@production",
        "direct_path": False,
        "gc_freeze": True,
    }
    monkeypatch.setenv("MLSERVER_MODEL_MAX_BATCH_SIZE", "1")
    assert ServingSettings().model_settings == {}, "a batch of one request is no batching"


def test_a_reload_freezes_the_new_copy_at_once_and_the_unload_of_the_old_one_collects(
    saved_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collections: list[int] = []
    collect = gc.collect

    def counted(*args: int) -> int:
        collections.append(1)
        return collect(*args)

    monkeypatch.setattr(gc, "collect", counted)
    gc.unfreeze()
    try:
        old = runtime(saved_model)  # the server's first load: one full collection, then everything is frozen
        assert len(collections) == 1 and gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        runtime(saved_model)  # a reload in place: the new copy is frozen without a full collection
        assert len(collections) == 1 and gc.get_freeze_count() > frozen
        asyncio.run(old.unload())  # the old copy goes: its cycles are collected
        assert len(collections) == 2
    finally:
        gc.unfreeze()


def test_once_requests_stop_the_heap_is_trimmed_once(saved_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trimmer = HeapTrimmer(idle=0.05, trim=lambda: True)
    monkeypatch.setattr(runtime_module, "HEAP_TRIMMER", trimmer)
    model = runtime(saved_model)

    async def predict_then_idle() -> None:
        for _ in range(3):
            await model.predict(request(IMAGES))
        await asyncio.sleep(0.3)

    asyncio.run(predict_then_idle())
    assert trimmer.trims == 1


def test_requests_gathered_before_an_unload_are_answered_by_that_copy(saved_model: Path) -> None:
    """A reload in place unloads the old copy while requests gathered for it may wait for their pass (a turn or
    three of the event loop): they are answered by it, not refused for a module it no longer has."""
    settings = ModelSettings(
        name="digits",
        implementation=RegistryModelRuntime,
        max_batch_size=16,  # as served (MLSERVER_MODEL_MAX_BATCH_SIZE)
        parameters=ModelParameters(uri=str(saved_model), extra={"registry_version": "7"}),
    )

    async def run() -> np.ndarray:
        model = RegistryModelRuntime(settings)
        await model.load()
        pending = asyncio.ensure_future(model.gathered.predict(IMAGES.copy(), None))
        await asyncio.sleep(0)  # the request is gathered; its pass is due on a later turn
        assert model.gathered.waiting, "the request waits for its pass"
        await model.unload()
        return await pending

    answer = asyncio.run(run())
    assert answer.shape == (3, 10) and np.allclose(answer.sum(axis=1), 1.0, atol=1e-5)
