"""The version pair the sandbox runs: MLflow 3.12 clients (training, serving, the CLI) against the tracking
server's newer release (its own environment, pyproject.toml's `tracking` extra).

The session's stack already trained (logging, datasets, the registration wait), promoted (alias and stage)
and served (the artifact proxy, the registry webhook) through the pair; these tests check that it really is the
pair, and what a 3.12 client reads back from the newer server.
"""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.e2e.conftest import MODEL, Stack
from tests.support import PROJECT_ROOT, logged_model_id

pytestmark = pytest.mark.e2e

REQUIREMENTS = PROJECT_ROOT / "infra" / "images" / "requirements"


def locked_mlflow(export: str) -> str:
    """The MLflow release that an install's requirements (exported from uv.lock) pin."""
    text = (REQUIREMENTS / export).read_text()
    match = re.search(r"^mlflow==(\S+)$", text, re.MULTILINE)
    assert match, f"{export} pins no mlflow"
    return match.group(1)


def test_the_server_runs_its_locked_release_and_the_clients_run_3_12(stack: Stack) -> None:
    server = requests.get(f"{stack.tracking_uri}/version", timeout=10)
    assert server.status_code == 200
    assert server.text == locked_mlflow("tracking.txt")
    assert mlflow.__version__ == locked_mlflow("ml.txt") == "3.12.0"
    assert server.text != mlflow.__version__


def test_a_3_12_client_reads_back_runs_datasets_and_the_registry(stack: Stack) -> None:
    client = MlflowClient(stack.tracking_uri)
    version = client.get_model_version(MODEL, stack.version)
    assert version.run_id, "the registered version has no run"
    run = client.get_run(version.run_id)
    contexts = {i.dataset.name: {t.key: t.value for t in i.tags} for i in run.inputs.dataset_inputs}
    assert {name: tags.get("mlflow.data.context") for name, tags in contexts.items()} == {
        "mnist-training": "training",
        "mnist-validation": "validation",
        "mnist-test": "test",
    }
    found = client.search_runs(
        [run.info.experiment_id], f"attributes.run_id = '{run.info.run_id}' and metrics.test_accuracy > 0.5"
    )
    assert [r.info.run_id for r in found] == [run.info.run_id]
    by_run = client.search_model_versions(f"name = '{MODEL}' and run_id = '{run.info.run_id}'")
    assert [v.version for v in by_run] == [stack.version]
    assert client.get_model_version_by_alias(MODEL, "production").version == stack.version
    assert client.get_model_version(MODEL, stack.version).current_stage == "Production"
    # Serving registered its alias webhook through its 3.12 client.
    assert any(w.url.startswith("http://127.0.0.1:") for w in client.list_webhooks())


def test_artifacts_go_up_and_come_back_through_the_proxy(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As every client of the sandbox: through the tracking server's artifact proxy, never to S3 directly.
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    client = MlflowClient(stack.tracking_uri)
    run = client.create_run(client.create_experiment("version-pair"))
    payload = "written by an MLflow 3.12 client\n" * 1000
    client.log_text(run.info.run_id, payload, "notes/pair.txt")
    client.set_terminated(run.info.run_id)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == ["notes/pair.txt"]
    local = client.download_artifacts(run.info.run_id, "notes/pair.txt", str(tmp_path))
    assert Path(local).read_text() == payload


def test_a_models_source_needs_its_model_id_on_the_newer_server(stack: Stack) -> None:
    """The one call found that a 3.12 client makes and the newer server refuses: registering a `models:/m-<id>`
    source with only its run. The server checks a version's source against the run or logged model it names
    (3.12 did not), so the project's callers pass `model_id` too."""
    client = MlflowClient(stack.tracking_uri)
    production = client.get_model_version(MODEL, stack.version)
    assert production.source and production.source.startswith("models:/m-")
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE.*model_id request parameter") as refused:
        client.create_model_version(MODEL, production.source, run_id=production.run_id)
    assert refused.value.get_http_status_code() == 400
    copy = client.create_model_version(
        MODEL, production.source, run_id=production.run_id, model_id=logged_model_id(production.source)
    )
    try:
        assert copy.source == production.source and copy.run_id == production.run_id
    finally:
        client.delete_model_version(MODEL, copy.version)
