"""The sandbox end to end on real servers: registry, loading, serving over V2 REST, and its failures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import requests

from mlops_sandbox.mnist import load_test_set
from mlops_sandbox.s3 import s3_client
from mlops_sandbox.v2 import V2Client, rest_request_body
from tests.e2e.conftest import MODEL, Stack
from tests.support import PROJECT_ROOT, PYTHON, assert_sigterm_stops_supervised_group, run_module
from tools.ports import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def test_images(mnist_root: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_test_set(mnist_root, download=False, limit=1000)
    return images.numpy(), labels.numpy()


def test_served_model_predicts_real_digits(stack: Stack, test_images: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = test_images
    client = V2Client(stack.serving_url, MODEL)
    prediction = client.infer(images[:200])
    assert prediction.probabilities.shape == (200, 10)
    assert prediction.model_version == stack.version
    assert float((prediction.digits == labels[:200]).mean()) >= 0.9
    single = client.infer(images[:1])
    assert single.digits[0] == labels[0]


def test_predict_cli_reports_accuracy_and_enforces_the_threshold(stack: Stack, mnist_root: Path) -> None:
    env = stack.client_env(SANDBOX_MNIST_ROOT=str(mnist_root))
    ok = run_module(
        "infra.ops.predict", "--serving-url", stack.serving_url, "-n", "500", "--min-accuracy", "0.85", env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert "accuracy 0.9" in ok.stdout and "p99" in ok.stdout and f"served version {stack.version}" in ok.stdout
    strict = run_module(
        "infra.ops.predict", "--serving-url", stack.serving_url, "-n", "500", "--min-accuracy", "0.9999", env=env
    )
    assert strict.returncode == 1 and "below the required" in strict.stderr


def test_predict_says_at_once_what_it_waits_for_and_why_it_gave_up(stack: Stack, mnist_root: Path) -> None:
    env = stack.client_env(SANDBOX_MNIST_ROOT=str(mnist_root))
    wrong_name = ("--served-model", "mnist", "--wait-seconds", "2", "-n", "10")
    for protocol, url in (("rest", stack.serving_url), ("grpc", f"127.0.0.1:{stack.grpc_port}")):
        done = run_module("infra.ops.predict", "--serving-url", url, "--protocol", protocol, *wrong_name, env=env)
        assert done.returncode == 2
        first, *_ = done.stderr.splitlines()
        # The server's own answer, from the first try on, not a bare "not ready" after the whole wait.
        assert first.startswith(f"waiting up to 2 s for model server at {url}")
        assert "Model mnist" in first and "not found" in first, first
        last = done.stderr.splitlines()[-1]
        assert "Model mnist" in last and "not found" in last and "--served-model" in last, last
    nobody = f"http://127.0.0.1:{free_port()}"
    done = run_module("infra.ops.predict", "--serving-url", nobody, "--wait-seconds", "1", "-n", "10", env=env)
    assert done.returncode == 2 and "Connection refused" in done.stderr.splitlines()[-1]
    # Each protocol at the other's port: a mistake no wait repairs, named at the first try, with the full wait
    # (60 s) left unused: no "waiting up to" notice, which comes after a try that will be repeated.
    for protocol, url, other in (
        ("rest", f"http://127.0.0.1:{stack.grpc_port}", "gRPC"),
        ("grpc", stack.serving_url.removeprefix("http://"), "REST"),
    ):
        done = run_module("infra.ops.predict", "--serving-url", url, "--protocol", protocol, "-n", "10", env=env)
        assert done.returncode == 2, done.stderr
        assert "waiting up to" not in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines()[-1].startswith("error:"), done.stderr
        assert f"is it the {other} port?" in done.stderr and "gRPC 8081" in done.stderr, done.stderr


def test_grpc_answers_as_rest_does(stack: Stack, mnist_root: Path) -> None:
    env = stack.client_env(SANDBOX_MNIST_ROOT=str(mnist_root))
    rest = run_module("infra.ops.predict", "--serving-url", stack.serving_url, "-n", "300", env=env)
    grpc_address = f"127.0.0.1:{stack.grpc_port}"
    grpc = run_module("infra.ops.predict", "--serving-url", grpc_address, "--protocol", "grpc", "-n", "300", env=env)
    assert rest.returncode == 0 and grpc.returncode == 0, rest.stderr + grpc.stderr
    summary = rest.stdout.split(": ", 1)[1].split(";")[0]  # accuracy 0.93 (279/300 test images), served version 1
    assert summary in grpc.stdout and grpc.stdout.startswith(f"grpc://{grpc_address}")


def test_a_batch_of_10000_images_is_served_over_both_protocols(stack: Stack, mnist_root: Path) -> None:
    # 10,000 images: about 55 MiB as JSON, 30 MiB as gRPC FP32, both within the one limit of 64 MiB
    # (SANDBOX_SERVING_MAX_REQUEST_BYTES); gRPC's own default of 4 MiB refused 1,500 that REST served.
    env = stack.client_env(SANDBOX_MNIST_ROOT=str(mnist_root))
    batch = ("-n", "10000", "--batch-size", "10000")
    rest = run_module("infra.ops.predict", "--serving-url", stack.serving_url, *batch, env=env)
    grpc_address = f"127.0.0.1:{stack.grpc_port}"
    grpc = run_module("infra.ops.predict", "--serving-url", grpc_address, "--protocol", "grpc", *batch, env=env)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert grpc.returncode == 0, grpc.stdout + grpc.stderr
    assert "/10000 test images" in rest.stdout and "/10000 test images" in grpc.stdout
    assert rest.stdout.split(": ", 1)[1].split(";")[0] in grpc.stdout, "the two protocols answered differently"


def test_a_rest_body_over_the_limit_is_refused_with_413_before_it_is_sent(stack: Stack) -> None:
    # Only the headers go out: the server answers from Content-Length, without reading 65 MiB.
    host, port = "127.0.0.1", int(stack.serving_url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(
            f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {65 * 2**20}\r\n\r\n".encode()
        )
        answer = connection.makefile("rb").read().decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:500]
    assert "SANDBOX_SERVING_MAX_REQUEST_BYTES" in answer


LOAD_SNIPPET = """
import mlflow
model_name = "pytorch_simplenn_mnist"
model_version = {version}
model = mlflow.pytorch.load_model(model_uri=f"models:/{{model_name}}/{{model_version}}")
"""


def test_mlflow_load_model_snippet_and_every_uri_form(stack: Stack, mnist_root: Path, tmp_path: Path) -> None:
    # A fresh interpreter in an empty folder, with no S3 credentials: artifacts come through the server.
    run_id = requests.get(
        f"{stack.tracking_uri}/api/2.0/mlflow/model-versions/get",
        params={"name": MODEL, "version": stack.version},
        timeout=10,
    ).json()["model_version"]["run_id"]
    script = LOAD_SNIPPET.format(version=stack.version) + textwrap.dedent(f"""
        import torch
        from torchvision import datasets
        test = datasets.MNIST({str(mnist_root)!r}, train=False, download=False)
        x = test.data[:300].unsqueeze(1).float() / 255
        def accuracy(m):
            return float((m(x).argmax(1) == test.targets[:300]).float().mean())
        import time
        print("version", accuracy(model))
        for uri in ["models:/{MODEL}@production", "models:/{MODEL}/Production", "runs:/{run_id}/model"]:
            started = time.perf_counter()
            loaded = mlflow.pytorch.load_model(uri)
            print(uri, time.perf_counter() - started, accuracy(loaded))
    """)
    done = subprocess.run(
        [PYTHON, "-c", script], env=stack.client_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4
    assert all(float(line.split()[-1]) > 0.85 for line in lines), lines
    # runs:/ first asks the run's own artifacts for `model`, which MLflow 3 keeps under the logged model
    # instead: a 500 for that missing object cost 7 retries (246 s); a 404 lets the client fall back at once.
    seconds = {line.split()[0]: float(line.split()[1]) for line in lines[1:]}
    by_version = max(seconds[f"models:/{MODEL}@production"], seconds[f"models:/{MODEL}/Production"])
    assert seconds[f"runs:/{run_id}/model"] < 20 * by_version, seconds


def test_a_missing_artifact_is_not_found_not_a_server_error(stack: Stack) -> None:
    # A 500 here is what clients retry with backoff for minutes (services/mlflow/artifacts.py).
    answer = requests.get(f"{stack.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/0/no-such-run/model", timeout=30)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_artifacts_are_objects_in_the_bucket(stack: Stack) -> None:
    from pydantic import SecretStr

    s3 = s3_client(
        stack.s3_endpoint,
        SecretStr(stack.s3_keys["AWS_ACCESS_KEY_ID"]),
        SecretStr(stack.s3_keys["AWS_SECRET_ACCESS_KEY"]),
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow")["Contents"]]
    assert any(k.endswith("/MLmodel") for k in keys)
    assert any(k.endswith("/model.pth") or k.endswith("data/model.pth") for k in keys)
    assert any(k.endswith("plots/confusion_matrix.png") for k in keys)


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        {"inputs": [{"name": "input-0", "shape": [1, 1, 28, 28], "datatype": "BYTES", "data": ["x"] * 784}]},
        {"inputs": [{"name": "input-0", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 10}]},
        {"inputs": [{"name": "input-0", "shape": [-1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}]},
        {"nonsense": True},
        "not json at all",
    ],
    ids=["wrong-shape", "strings", "data-does-not-fill-shape", "negative-dimension", "no-inputs", "invalid-json"],
)
def test_malformed_requests_get_an_error_and_the_server_stays_up(
    stack: Stack, body: Any, test_images: tuple[np.ndarray, np.ndarray]
) -> None:
    url = f"{stack.serving_url}/v2/models/{MODEL}/infer"
    if isinstance(body, str):
        response = requests.post(url, data=body, headers={"content-type": "application/json"}, timeout=30)
    else:
        response = requests.post(url, json=body, timeout=30)
    assert 400 <= response.status_code < 500, f"bad input is the client's error: {response.status_code} {response.text}"
    assert response.json(), "the answer says what is wrong"
    images, labels = test_images
    after = requests.post(
        url, data=rest_request_body(images[:5]), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert after.status_code == 200
    assert requests.get(f"{stack.serving_url}/v2/models/{MODEL}/ready", timeout=5).status_code == 200


def test_versioned_paths_answer_404_and_the_version_is_in_every_answer_instead(
    stack: Stack, test_images: tuple[np.ndarray, np.ndarray]
) -> None:
    # docs/operations.md, "Versioned V2 paths", says why: one unversioned model is reloaded in place.
    body = rest_request_body(test_images[0][:1])
    versioned = f"{stack.serving_url}/v2/models/{MODEL}/versions/{stack.version}/infer"
    answer = requests.post(versioned, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 404, answer.text
    assert V2Client(stack.serving_url, MODEL).infer(test_images[0][:1]).model_version is not None


def test_prometheus_metrics_count_inferences(stack: Stack, test_images: tuple[np.ndarray, np.ndarray]) -> None:
    V2Client(stack.serving_url, MODEL).infer(test_images[0][:2])
    metrics = requests.get(stack.metrics_url, timeout=10).text
    assert "model_infer_request_success" in metrics
    assert f'model="{MODEL}"' in metrics


def test_tracking_server_accepts_the_compose_host_name_and_refuses_others(stack: Stack) -> None:
    url = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(url, headers={"Host": "mlflow:5000"}, timeout=10).status_code == 200
    assert requests.get(url, headers={"Host": "evil.example"}, timeout=10).status_code == 403


def test_serving_waits_boundedly_for_a_missing_model_and_names_it(stack: Stack) -> None:
    env = stack.serving_env(
        SANDBOX_MODEL_REF="@no-such-alias",
        SANDBOX_SERVING_REGISTRY_WAIT_SECONDS="3",
        MLSERVER_HTTP_PORT=str(free_port()),
        MLSERVER_GRPC_PORT=str(free_port()),
        MLSERVER_METRICS_PORT=str(free_port()),
    )
    began = time.monotonic()
    done = run_module("services.serving.entrypoint", env=env, timeout=120)
    assert done.returncode == 1
    assert time.monotonic() - began < 60
    assert f"models:/{MODEL}@no-such-alias" in done.stderr and stack.tracking_uri in done.stderr


def test_sigterm_stops_the_whole_serving_process_group(stack: Stack) -> None:
    http_port = free_port()
    env = stack.serving_env(
        MLSERVER_HTTP_PORT=str(http_port),
        MLSERVER_GRPC_PORT=str(free_port()),
        MLSERVER_METRICS_PORT=str(free_port()),
        SANDBOX_MODEL_REF=stack.version,
    )
    log = open(stack.root / "serving-sigterm.log", "wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "services.serving.entrypoint"],
        env=env,
        cwd=str(PROJECT_ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/ready"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(ready, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (stack.root / "serving-sigterm.log").read_text()[-3000:]
            time.sleep(0.5)
        # The entrypoint became the supervisor, and its one child is MLServer itself: `mlflow models serve`
        # handed its process over to MLServer's CLI (services/serving/mlflow_serve.py, through mlserver_start.py)
        # instead of waiting on it as a second process.
        assert psutil.Process(proc.pid).cmdline()[1:3] == ["-m", "mlops_sandbox.processes"]
        (child,) = psutil.Process(proc.pid).children()
        argv = child.cmdline()
        assert argv[1:4] == ["-m", "services.serving.mlserver_start", "start"], argv
        assert_sigterm_stops_supervised_group(proc, timeout=60)
        with pytest.raises(requests.ConnectionError):
            requests.get(ready, timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
