"""The storage layout that the rendered InferenceService names, served by the real MLServer as KServe runs it.

No cluster can run here, so this does by hand what KServe would: render the InferenceService for @production
through the registry, download the S3 prefix of its storageUri straight from the S3 server (no tracking
server in between, as KServe's storage initializer does to /mnt/models), start `mlserver start` on it with
the command and environment of the ServingRuntime in infra/k8s, and send real MNIST test images.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlops_sandbox.processes import start_group, stop_group
from mlops_sandbox.waiting import http_ok, wait_for
from tests.e2e.conftest import MODEL, Stack
from tests.support import PROJECT_ROOT, module_env, run_module
from tools.k8s_validate import OVERLAYS_DIR, crd_validators, kustomize, load_documents, validate_object
from tools.ports import free_port

pytestmark = pytest.mark.e2e
SERVING_MANIFEST = PROJECT_ROOT / "infra" / "k8s" / "base" / "serving.yaml"
MOUNT = "/mnt/models"


def serving_runtime() -> dict[str, Any]:
    """The kserve-container of the ServingRuntime that the manifests deploy."""
    documents = list(yaml.safe_load_all(SERVING_MANIFEST.read_text()))
    (runtime,) = (doc for doc in documents if doc["kind"] == "ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    return container


def download_prefix(stack: Stack, storage_uri: str, target: Path) -> list[str]:
    """Every object under the s3:// prefix, to `target`, keeping the layout below the prefix; the keys."""
    location = urlparse(storage_uri)
    bucket, prefix = location.netloc, location.path.strip("/") + "/"
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id=stack.s3_keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.s3_keys["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            path = target / entry["Key"][len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, entry["Key"], str(path))
            keys.append(entry["Key"])
    return keys


def test_rendered_storage_uri_serves_with_kserves_mlflow_runtime(stack: Stack, tmp_path: Path) -> None:
    rendered = run_module("infra.ops.kserve", "@production", env=stack.client_env())
    assert rendered.returncode == 0, rendered.stderr
    print(rendered.stdout)  # shown with -s, and with the failure's report
    isvc = yaml.safe_load(rendered.stdout)
    predictor = isvc["spec"]["predictor"]
    storage_uri = predictor["model"]["storageUri"]
    assert storage_uri.startswith("s3://mlflow/"), storage_uri
    # Other tests of the session move @production (tests/e2e/test_follow.py): the render follows it.
    client = MlflowClient(stack.tracking_uri)
    production = client.get_model_version_by_alias(MODEL, "production")
    assert production.run_id, "a registered version links back to its run"
    for holder in (isvc["metadata"], predictor):
        assert holder["labels"]["mlops-sandbox/model-version"] == str(production.version)
        assert holder["labels"]["mlops-sandbox/run-id"] == production.run_id

    # The same render inside a kustomize build: every object back, the InferenceService rendered, all valid.
    build = tmp_path / "local-cluster.yaml"
    build.write_text(kustomize(OVERLAYS_DIR / "local-cluster"))
    in_build = run_module("infra.ops.kserve", "@production", "--manifests", str(build), env=stack.client_env())
    assert in_build.returncode == 0, in_build.stderr
    objects = load_documents(in_build.stdout, "render")
    assert len(objects) == len(load_documents(build.read_text(), "build"))
    (built,) = (o for o in objects if o["kind"] == "InferenceService")
    assert built["metadata"]["namespace"] == "mlops-sandbox"
    assert built["spec"]["predictor"]["model"]["storageUri"] == storage_uri
    assert built["spec"]["predictor"]["labels"]["mlops-sandbox/model-version"] == str(production.version)
    crds = crd_validators()
    results = [validate_object(o, "render", crds) for o in objects]
    print("\n".join(r.line() for r in results))
    assert [r.line() for r in results if r.errors] == []

    models = tmp_path / "models"
    keys = download_prefix(stack, storage_uri, models)
    assert (models / "MLmodel").is_file(), keys

    container = serving_runtime()
    assert container["command"] == ["mlserver", "start", MOUNT]
    manifest_env = {item["name"]: item["value"] for item in container["env"]}
    assert manifest_env["MLSERVER_MODEL_IMPLEMENTATION"] == "mlserver_mlflow.MLflowRuntime"
    assert manifest_env["MLSERVER_MODEL_URI"] == MOUNT
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    # The manifest's environment, with what KServe fills in (the model's name) and this machine's own:
    # the download folder stands for the /mnt/models mount, free ports for the container's.
    env = module_env(
        **{
            **manifest_env,
            "MLSERVER_MODEL_NAME": manifest_env["MLSERVER_MODEL_NAME"].replace("{{.Name}}", isvc["metadata"]["name"]),
            "MLSERVER_MODEL_URI": str(models),
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(http_port),
            "MLSERVER_GRPC_PORT": str(grpc_port),
            "MLSERVER_METRICS_PORT": str(metrics_port),
        }
    )
    # A pod has no tracking server or S3 credentials: the model must load from the folder alone.
    for key in [k for k in env if k.startswith(("MLFLOW_", "AWS_"))]:
        del env[key]
    mlserver = str(Path(sys.executable).with_name("mlserver"))
    log_path = tmp_path / "mlserver.log"
    with open(log_path, "wb") as log:
        proc = start_group([mlserver, "start", str(models)], env=env, stdout=log.fileno(), cwd=str(tmp_path))
    served_name = env["MLSERVER_MODEL_NAME"]
    try:
        ready_url = f"http://127.0.0.1:{http_port}/v2/models/{served_name}/ready"
        probe = http_ok(ready_url)

        def ready() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"mlserver exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            probe()

        wait_for(ready, service="mlserver", address=ready_url, timeout=120, hint=f"log: {log_path}")
        predicted = run_module(
            "infra.ops.predict",
            "--serving-url",
            f"http://127.0.0.1:{http_port}",
            "--served-model",
            served_name,
            "-n",
            "1000",
            env=module_env(),
        )
    finally:
        stop_group(proc.pid, grace=15, leader=proc)
    assert predicted.returncode == 0, predicted.stderr + log_path.read_text()[-3000:]
    found = re.search(r"accuracy (\d\.\d+) \((\d+)/1000", predicted.stdout)
    assert found, predicted.stdout
    print(f"served from {storage_uri}: {predicted.stdout.strip()}")
    # The model the layout holds is the one the registry names: its accuracy on these 1,000 images is its
    # training run's test accuracy (on all 10,000) up to sampling noise (standard error about 0.01).
    test_accuracy = client.get_run(production.run_id).data.metrics["test_accuracy"]
    assert abs(float(found.group(1)) - test_accuracy) <= 0.04, (predicted.stdout, test_accuracy)
    assert float(found.group(1)) >= 0.5, predicted.stdout
