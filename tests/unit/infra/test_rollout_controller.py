"""What a rollout tells its user from the registry before it starts (infra/ops/rollout/controller.py)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from infra.ops.rollout.controller import last_rejection
from tests.unit.conftest import NAME


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
