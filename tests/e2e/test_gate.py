"""Gated promotion through a real staging endpoint: a worse candidate is rejected and production stays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops_sandbox import registry
from tests.e2e.conftest import MODEL, Stack
from tests.support import run_module, server
from tools.ports import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def staging_url(stack: Stack) -> Iterator[str]:
    port = free_port()
    env = stack.serving_env(
        SANDBOX_MODEL_REF="@staging",
        MLSERVER_HTTP_PORT=str(port),
        MLSERVER_GRPC_PORT=str(free_port()),
        MLSERVER_METRICS_PORT=str(free_port()),
    )
    client = MlflowClient(stack.tracking_uri)
    if "staging" not in client.get_registered_model(MODEL).aliases:
        registry.promote(client, MODEL, stack.version, "staging")
    url = f"http://127.0.0.1:{port}"
    with server(
        "serving-staging", "services.serving.entrypoint", env, stack.root, f"{url}/v2/models/{MODEL}/ready", timeout=180
    ):
        yield url


def test_a_worse_candidate_is_rejected_and_production_is_unchanged(
    stack: Stack, staging_url: str, mnist_root: Path
) -> None:
    env = stack.client_env(
        SANDBOX_MNIST_ROOT=str(mnist_root), SANDBOX_SERVING_URL=stack.serving_url, SANDBOX_STAGING_URL=staging_url
    )
    weak = run_module("training.train", "--train-limit", "2000", "--max-steps", "1", "--alias", "none", env=env)
    assert weak.returncode == 0, weak.stderr[-2000:]
    client = MlflowClient(stack.tracking_uri)
    candidate = max(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    production_before = registry.resolve_version(client, MODEL, "@production")

    gated = run_module(
        "infra.ops.registry", "promote", str(candidate), "--to", "production", "--gate", "-n", "1000", env=env
    )
    assert gated.returncode == 1, gated.stdout + gated.stderr
    assert f"gate rejected version {candidate}" in gated.stderr and "stays @staging" in gated.stderr

    assert registry.resolve_version(client, MODEL, "@production") == production_before
    assert registry.resolve_version(client, MODEL, "@staging") == str(candidate)
    tags = client.get_model_version(MODEL, str(candidate)).tags
    assert tags["gate.outcome"] == "rejected"
    assert tags["gate.production_version"] == production_before
    assert float(tags["gate.candidate_accuracy"]) < float(tags["gate.production_accuracy"]) - 0.005
    assert "gate.decided_at" in tags and "candidate accuracy" in tags["gate.reason"]
    assert registry.inconsistencies(client, MODEL) == []


def test_a_candidate_as_good_as_production_is_promoted(stack: Stack, staging_url: str, mnist_root: Path) -> None:
    client = MlflowClient(stack.tracking_uri)
    production = registry.resolve_version(client, MODEL, "@production")
    env = stack.client_env(
        SANDBOX_MNIST_ROOT=str(mnist_root), SANDBOX_SERVING_URL=stack.serving_url, SANDBOX_STAGING_URL=staging_url
    )
    # The same version as production is, by definition, not worse than production.
    gated = run_module(
        "infra.ops.registry", "promote", production, "--to", "production", "--gate", "-n", "500", env=env
    )
    assert gated.returncode == 0, gated.stdout + gated.stderr
    assert "gate passed" in gated.stdout
    assert client.get_model_version(MODEL, production).tags["gate.outcome"] == "promoted"
    assert registry.inconsistencies(client, MODEL) == []
