"""The real compose smoke test: build the images, run the stack, train, serve, predict, restart.

    bash .ci/smoke.sh           # = .venv/bin/python -m pytest -m docker tests/compose

1. A Docker engine (installs docker.io and starts dockerd when missing: .ci/ensure_dockerd.py).
2. A local Python 3.11 base image from debootstrap (.ci/build_base_image.sh): nothing can be pulled.
3. The project's images (infra/images/Dockerfile), each pip install taking its wheels from the wheelhouse
   (infra/images/build_wheelhouse.sh) over HTTP on the host: no wheel travels in a build context.
4. compose.yaml with .ci/compose.smoke.yaml, once on SQLite and once with the postgres profile,
   reusing the images. Each run removes its containers and volumes; the images go at the end
   (SMOKE_KEEP_IMAGES=1 keeps them).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from compose_images import build, image_ids, locked, run
from compose_stack import (
    BASE_IMAGE,
    COMPOSE,
    DOCKER,
    MODEL_NAME,
    ROOT,
    SMOKE_IMAGES,
    SMOKE_OVERRIDE,
    ComposeStack,
    compose_env,
    model_artifact_keys,
    psql,
)

from mlops_sandbox.mnist import load_test_set
from mlops_sandbox.v2 import V2Client
from tests.conftest import ImageBuild
from tests.doc_blocks import DOCUMENTS, Session, blocks
from tests.support import module_env, run_module

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2700)]

MIN_ACCURACY = 0.85


DOCKER_SHIM = """#!/bin/sh
# `docker compose` is the standalone Compose binary here (no Docker CLI plugins on these machines).
if [ "$1" = compose ]; then shift; exec {compose} "$@"; fi
exec {docker} "$@"
"""


def run_docker_blocks(stack: ComposeStack, work: Path) -> None:
    """Run the documentation's `test: docker` blocks as written, against this compose project: `docker compose`
    finds the project, its files and its env file through Compose's own variables."""
    shim = work / "bin"
    shim.mkdir()
    (shim / "docker").write_text(DOCKER_SHIM.format(compose=COMPOSE, docker=DOCKER))
    (shim / "docker").chmod(0o755)
    env = {
        **compose_env(),
        "PATH": f"{shim}:/usr/bin:/bin",
        "COMPOSE_PROJECT_NAME": stack.project,
        "COMPOSE_FILE": f"{ROOT / 'compose.yaml'}:{SMOKE_OVERRIDE}",
        "COMPOSE_ENV_FILES": str(stack.env_file),
    }
    session = Session(ROOT, env, work)
    for document in DOCUMENTS:
        for block in blocks(document):
            if block.docker:
                session.run(block)


@pytest.fixture(scope="module")
def images(
    tmp_path_factory: pytest.TempPathFactory, mnist_root: Path, image_build: ImageBuild | None
) -> Iterator[dict[str, str]]:
    """Steps 1-3, once for both backends (compose_images.py; in the background when other tests ran first);
    removes at the end the images that it built."""
    built: dict[str, Any] = {}
    if image_build is not None:
        began = time.monotonic()
        built = image_build.wait(timeout=2400)
        print(f"\nwaited {time.monotonic() - began:.0f} s for the image builds ({image_build.log})", flush=True)
    with locked():
        if not built or built["ids"] != image_ids():  # no background build, or another run rebuilt the tags
            before = build(tmp_path_factory.mktemp("images"), mnist_root)
        # What existed before this session stays at the end: the background build's view of it, if there was one.
        existed: list[str] = built["existed"] if built else before
        sizes = {
            name: int(run([DOCKER, "image", "inspect", "--format", "{{.Size}}", name], timeout=60))
            for name in SMOKE_IMAGES.values()
        }
        for name, size in sizes.items():
            print(f"\n  {name}: {size / 1e9:.2f} GB", flush=True)
        try:
            yield SMOKE_IMAGES
        finally:
            if os.environ.get("SMOKE_KEEP_IMAGES") != "1":
                ours = [name for name in [*SMOKE_IMAGES.values(), BASE_IMAGE] if name not in existed]
                subprocess.run([DOCKER, "rmi", *ours], capture_output=True, timeout=600)
                subprocess.run(
                    [DOCKER, "image", "prune", "-f", "--filter", "label=mlops-sandbox.stage=build"],
                    capture_output=True,
                    timeout=600,
                )


def first_correct_prediction(stack: ComposeStack, images: np.ndarray, labels: np.ndarray, timeout: float) -> float:
    """Poll the REST endpoint until it predicts a real test image correctly; returns when that happened."""
    deadline = time.monotonic() + timeout
    client = stack.rest()
    while True:
        try:
            if int(client.infer(images[:1]).digits[0]) == int(labels[0]):
                return time.monotonic()
        except (requests.RequestException, RuntimeError):
            pass
        assert time.monotonic() < deadline, f"no correct prediction within {timeout:.0f} s:\n{stack.logs('serving')}"
        time.sleep(1)


def assert_serving_predicts(stack: ComposeStack, images: np.ndarray, labels: np.ndarray, version: str = "1") -> None:
    ready = requests.get(f"{stack.serving_url}/v2/models/{MODEL_NAME}/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    rest = stack.rest().infer(images)
    assert rest.model_version == version
    rest_accuracy = float((rest.digits == labels).mean())
    assert rest_accuracy >= MIN_ACCURACY, f"REST accuracy {rest_accuracy:.3f} on {len(labels)} test images"
    # gRPC through tritonclient, in a process of its own (it cannot share one with MLServer's protocol classes,
    # which this test session imports elsewhere).
    grpc = run_module(
        "infra.ops.predict",
        "--serving-url",
        stack.grpc_address,
        "--protocol",
        "grpc",
        "-n",
        str(len(labels)),
        env=module_env(SANDBOX_MNIST_ROOT=str(stack.mnist_dir), SANDBOX_MNIST_DOWNLOAD="false"),
    )
    assert grpc.returncode == 0, grpc.stdout + grpc.stderr
    correct = int((rest.digits == labels).sum())
    assert f"({correct}/{len(labels)} test images), served version {version}" in grpc.stdout, "gRPC and REST disagree"


def assert_both_replicas_answer(stack: ComposeStack, images: np.ndarray) -> None:
    """Requests through the router reach every production replica: Prometheus, which scrapes each replica by
    DNS, sees the served-requests counter grow on as many instances as there are replicas (staging gets no
    traffic from the router outside a rollout)."""
    client = stack.rest()
    for start in range(0, 100):
        client.infer(images[start % len(images) : start % len(images) + 1])
    query = f"{stack.prometheus_url}/api/v1/query"
    expression = 'count(sum by (instance) (served_model_requests_total{job="serving"}) > 0)'
    deadline = time.monotonic() + 60
    while True:
        result = requests.get(query, params={"query": expression}, timeout=10).json()["data"]["result"]
        answered = int(float(result[0]["value"][1])) if result else 0
        if answered == stack.replicas:
            return
        assert time.monotonic() < deadline, f"{answered} of {stack.replicas} replicas answered through the router"
        time.sleep(2)


def snapshot(stack: ComposeStack) -> dict[str, object]:
    """What must survive `down` + `up`: runs, versions and the bucket's objects."""
    client = stack.mlflow()
    experiment = client.get_experiment_by_name("mnist-simplenn")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    return {
        "runs": sorted(run.info.run_id for run in runs),
        "versions": sorted((v.version, v.run_id) for v in versions),
        "objects": stack.bucket_keys(),
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_compose_stack_trains_serves_and_survives_a_restart(
    images: dict[str, str], backend: str, tmp_path: Path, mnist_root: Path
) -> None:
    # The PostgreSQL run also scales production to two replicas behind the router (infra/compose/scale.yaml).
    stack = ComposeStack(backend, tmp_path, mnist_root, replicas=2 if backend == "postgres" else 1)
    test_images, test_labels = load_test_set(mnist_root, download=False, limit=200)
    x, y = test_images.numpy(), test_labels.numpy()
    try:
        began = time.monotonic()
        # Blocks until create-bucket and training have completed and every long-running service is healthy.
        stack.up(1200)
        up_done = time.monotonic()
        first = first_correct_prediction(stack, x, y, timeout=120)
        print(
            f"\n[{backend}] up --wait took {up_done - began:.0f} s; first correct prediction "
            f"{first - began:.0f} s after `up`",
            flush=True,
        )

        containers = stack.containers()
        assert len(containers["serving"]) == stack.replicas, containers["serving"]
        for service in ("s3", "mlflow", "serving", "serving-staging", "router", "prometheus") + (
            ("postgres",) if backend == "postgres" else ()
        ):
            assert all(c["Health"] == "healthy" for c in containers[service]), containers[service]
        for job in ("create-bucket", "training"):
            (container,) = containers[job]
            assert container["State"] == "exited" and container["ExitCode"] == 0, container

        # The tracking server answers through its service name and localhost, and refuses other hosts.
        assert requests.get(f"{stack.mlflow_url}/health", timeout=10).status_code == 200
        search = f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/search"
        for host in ("mlflow:5000", f"localhost:{stack.ports['SANDBOX_MLFLOW_PORT']}"):
            assert requests.get(search, headers={"Host": host}, timeout=10).status_code == 200, host
        assert requests.get(search, headers={"Host": "attacker.example"}, timeout=10).status_code == 403

        stack.s3().head_bucket(Bucket="mlflow")
        client = stack.mlflow()
        versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
        assert [v.version for v in versions] == ["1"]
        assert client.get_model_version_by_alias(MODEL_NAME, "production").version == "1"
        assert client.get_model_version_by_alias(MODEL_NAME, "staging").version == "1"
        run_metrics = client.get_run(versions[0].run_id).data.metrics
        assert run_metrics["test_accuracy"] >= MIN_ACCURACY
        artifacts = model_artifact_keys(stack.bucket_keys())
        assert any(key.endswith("/MLmodel") for key in artifacts), stack.bucket_keys()
        assert any(key.endswith("/data/model.pth") for key in artifacts), stack.bucket_keys()
        if backend == "postgres":
            assert psql(stack, "select count(*) from model_versions") == "1"

        assert_serving_predicts(stack, x, y)
        if backend == "sqlite":
            # Before any rollout, the router sends everything to production.
            through_router = V2Client(stack.router_url, MODEL_NAME).infer(x[:5])
            assert through_router.model_version == "1"
            # The documentation's compose blocks, as written (see run_docker_blocks; README's first steps are
            # the same commands): predict, the cli service's list, train (version 2), a blue-green rehearsal
            # (version 3 gated, promoted, rolled back), a gated promotion and a rollback (@production on
            # version 1), then two canaries through the router: a good one (version 4, promoted) and a
            # schema-breaking one (version 5, aborted at its first step).
            run_docker_blocks(stack, tmp_path)
            versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
            assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4, 5]
            assert client.get_model_version(MODEL_NAME, "3").tags["gate.outcome"] == "promoted"
            assert client.get_model_version(MODEL_NAME, "4").tags["rollout.outcome"] == "promoted"
            aborted = client.get_model_version(MODEL_NAME, "5").tags
            assert aborted["rollout.outcome"] == "aborted" and aborted["rollout.reason"].startswith("error rate")
            assert client.get_model_version_by_alias(MODEL_NAME, "production").version == "4"
            assert stack.rest().infer(x[:5]).model_version == "4", "serving follows @production"
            # The split is back on production, which now serves the promoted canary.
            assert V2Client(stack.router_url, MODEL_NAME).infer(x[:5]).model_version == "4"
        else:
            # The predict and cli services run in the SQLite run's documentation blocks; here, the replicas.
            assert_both_replicas_answer(stack, x)

        before = snapshot(stack)
        stack.compose("down", timeout=300)
        assert not stack.compose("ps", "-a", "-q").stdout.strip()
        # A restart serves what the registry has: `up` trains only when nothing is registered yet.
        stack.up(900)
        training_log = stack.logs("training")
        assert re.search(r"@production is version \d+: nothing to train", training_log), training_log
        assert snapshot(stack) == before
        assert_serving_predicts(
            stack, x, y, version=client.get_model_version_by_alias(MODEL_NAME, "production").version
        )
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", timeout=600, check=False)
    leftovers = subprocess.run(
        [DOCKER, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={stack.project}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not leftovers.stdout.strip(), f"volumes left behind: {leftovers.stdout}"
