"""What a benchmark run needs before it measures: a registry with a trained model, and requests that work."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import requests
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb

from mlops_sandbox.v2 import INPUT_NAME
from tools.benchmark import load, servers
from tools.ports import free_port


@contextmanager
def throwaway_server(work: Path) -> Iterator[str]:
    """A temporary MLflow server, its store and artifacts under `work`; its tracking URI."""
    port = free_port()
    env = servers.clean_env(
        f"http://127.0.0.1:{port}",
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{work / 'mlflow.db'}",
        MLFLOW_ARTIFACTS_DESTINATION=str(work / "artifacts"),
        MLFLOW_PORT=str(port),
    )
    tracking_uri = env["MLFLOW_TRACKING_URI"]
    argv = [servers.PYTHON, "-m", "services.mlflow.entrypoint"]
    with servers.started("mlflow", argv, env, f"{tracking_uri}/health", work):
        yield tracking_uri


@contextmanager
def throwaway_registry(work: Path, train_limit: int) -> Iterator[tuple[str, str]]:
    """A temporary MLflow server with one trained version of the model aliased @production."""
    with throwaway_server(work) as tracking_uri:
        env = servers.clean_env(tracking_uri)
        result = work / "training.json"
        trained = subprocess.run(
            [
                servers.PYTHON,
                "-m",
                "training.train",
                "--train-limit",
                str(train_limit),
                "--epochs",
                "1",
                "--alias",
                "production",
                "--output-json",
                str(result),
            ],
            env=env,
            cwd=str(servers.PROJECT_ROOT),
            capture_output=True,
            text=True,
            timeout=900,
        )
        if trained.returncode != 0:
            raise RuntimeError(f"training failed:\n{trained.stdout[-2000:]}\n{trained.stderr[-3000:]}")
        yield tracking_uri, json.loads(result.read_text())["version"]


def grpc_request(model: str, images: np.ndarray) -> bytes:
    """A V2 ModelInferRequest (tritonclient's protocol classes) carrying the float32 batch (N, 1, 28, 28) as raw
    little-endian bytes, serialized once: the load generator then sends bytes, and no client library spends, per
    request, CPU time that the benchmark would count against the server."""
    tensor = pb.ModelInferRequest.InferInputTensor(name=INPUT_NAME, datatype="FP32", shape=list(images.shape))
    batch = np.ascontiguousarray(images, dtype="<f4")
    return pb.ModelInferRequest(
        model_name=model, inputs=[tensor], raw_input_contents=[batch.tobytes()]
    ).SerializeToString()


def check_rest(url: str, body: bytes, batch: int, expected: np.ndarray | None = None) -> None:
    """One request before measuring: the server must answer it with `batch` predictions, not an error, and with
    `expected` (float32 probabilities (N, 10), MLflow's in-process answer) when given: the same digits, and
    probabilities equal to float32 rounding. Not bit for bit: a server with another number of torch threads
    (OMP_NUM_THREADS) sums the matrix products in another order, which moves the last bits."""
    response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:500]}")
    answer = response.json()
    if expected is not None:
        output = answer["outputs"][0]
        got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        if got.shape != expected.shape or not np.array_equal(got.argmax(axis=1), expected.argmax(axis=1)):
            raise RuntimeError(f"POST {url} predicted other digits than MLflow's pyfunc.predict in-process")
        if not np.allclose(got, expected, rtol=1e-5, atol=1e-6):
            worst = float(np.abs(got - expected).max())
            raise RuntimeError(f"POST {url} answered probabilities up to {worst:g} away from pyfunc.predict's")
    predictions = answer["outputs"][0]["shape"][0] if "outputs" in answer else len(answer["predictions"])
    if predictions != batch:
        raise RuntimeError(f"POST {url} returned {predictions} predictions for {batch} images")


def rest_binary_request_body(images: np.ndarray) -> tuple[bytes, int]:
    """A V2 binary tensor request for float32 images (N, 1, 28, 28) as tritonclient.http writes it by default
    (input bytes after the JSON header, every output asked for binary), and its JSON header's length in bytes."""
    tensor = httpclient.InferInput(INPUT_NAME, list(images.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(images, dtype=np.float32), binary_data=True)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([tensor])
    return body, int(header_length)


def check_rest_binary(url: str, body: bytes, header_length: int, batch: int) -> None:
    """One binary request before measuring: the server must answer it with `batch` binary predictions."""
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)}
    response = requests.post(url, data=body, headers=headers, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"POST {url} (binary) answered {response.status_code}: {response.text[:500]}")
    length = response.headers.get("Inference-Header-Content-Length")
    result = httpclient.InferenceServerClient.parse_response_body(
        response.content, header_length=int(length) if length else None
    )
    name = result.get_response()["outputs"][0]["name"]
    predictions = result.as_numpy(name).shape[0]
    if length is None or predictions != batch:
        raise RuntimeError(
            f"POST {url} (binary) returned {predictions} predictions for {batch} images, header {length}"
        )


def check_grpc(target: str, request: bytes, batch: int) -> None:
    import grpc

    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary(load.GRPC_INFER, response_deserializer=pb.ModelInferResponse.FromString)
        answer = infer(request, timeout=60)
    if answer.outputs[0].shape[0] != batch:
        raise RuntimeError(f"gRPC {target} returned shape {list(answer.outputs[0].shape)} for {batch} images")
