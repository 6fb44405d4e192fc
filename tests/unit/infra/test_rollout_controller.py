"""What a rollout tells its user before it starts (infra/ops/rollout/controller.py), and its own metrics."""

from __future__ import annotations

import socket

import requests
from mlflow.tracking import MlflowClient

from infra.ops.rollout.controller import last_rejection
from infra.ops.rollout.telemetry import CANDIDATE_WEIGHT
from infra.ops.rollout.telemetry import serve as serve_metrics
from tests.unit.conftest import NAME
from tools.ports import free_port


def test_a_version_whose_last_rollout_failed_is_named_with_the_reason(client: MlflowClient) -> None:
    assert last_rejection(client, NAME, "2") is None  # never rolled out
    client.set_model_version_tag(NAME, "2", "rollout.outcome", "aborted")
    client.set_model_version_tag(NAME, "2", "rollout.reason", "error rate 100.0 % > 1.0 %")
    assert last_rejection(client, NAME, "2") == "aborted: error rate 100.0 % > 1.0 %"
    # A later rollout that passed replaces the outcome: nothing to say any more.
    client.set_model_version_tag(NAME, "2", "rollout.outcome", "promoted")
    assert last_rejection(client, NAME, "2") is None
    client.set_model_version_tag(NAME, "3", "rollout.outcome", "interrupted")
    assert last_rejection(client, NAME, "3") == "interrupted: no reason recorded"


def test_the_controller_serves_its_metrics_once_and_says_so_when_the_port_is_taken() -> None:
    address = f"127.0.0.1:{free_port()}"
    assert serve_metrics(address) is None
    CANDIDATE_WEIGHT.labels("7").set(10)
    page = requests.get(f"http://{address}/metrics", timeout=5).text
    assert 'sandbox_rollout_candidate_weight_percent{model_version="7"} 10.0' in page
    assert serve_metrics(address) is None  # a second rollout in this process keeps the same server
    with socket.create_server(("127.0.0.1", 0)) as taken:
        host, port = taken.getsockname()
        note = serve_metrics(f"{host}:{port}")
    assert note is not None and note.startswith(f"note: the controller's metrics are not served ({host}:{port}: ")
