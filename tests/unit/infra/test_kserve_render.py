"""`python -m infra.ops.kserve`: from a registry version to KServe's InferenceService, and its canary form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from infra.ops import kserve
from infra.ops.kserve import RenderError, ServedVersion, render, service_name, store_uri
from tools.k8s_validate import crd_validators, validate_object

RUN = "0123456789abcdef0123456789abcdef"


def template() -> dict[str, Any]:
    (isvc,) = (doc for doc in yaml.safe_load_all(kserve.TEMPLATE.read_text()) if doc["kind"] == "InferenceService")
    return dict(isvc)


def version(number: str, ref: str = "@production") -> ServedVersion:
    return ServedVersion(
        name="pytorch_simplenn_mnist",
        version=number,
        run_id=RUN,
        ref=ref,
        artifact_uri=f"mlflow-artifacts:/1/models/m-{number}/artifacts",
        storage_uri=f"s3://mlflow/1/models/m-{number}/artifacts",
    )


@pytest.mark.parametrize(
    ("artifact_uri", "destination", "expected"),
    [
        ("mlflow-artifacts:/1/models/m-ab/artifacts", "s3://mlflow/", "s3://mlflow/1/models/m-ab/artifacts"),
        (
            "mlflow-artifacts://mlflow:5000/1/models/m-ab/artifacts/",
            "s3://mlflow",
            "s3://mlflow/1/models/m-ab/artifacts",
        ),
        ("mlflow-artifacts:/2/r/artifacts/model", "s3://bucket/team/a/", "s3://bucket/team/a/2/r/artifacts/model"),
        ("s3://other/1/models/m-ab/artifacts/", "s3://mlflow/", "s3://other/1/models/m-ab/artifacts"),
    ],
)
def test_the_proxied_location_becomes_the_s3_uri_behind_it(artifact_uri: str, destination: str, expected: str) -> None:
    assert store_uri(artifact_uri, destination) == expected


@pytest.mark.parametrize(
    ("artifact_uri", "destination", "message"),
    [
        ("/tmp/mlartifacts/1/m/artifacts", "s3://mlflow/", "KServe cannot download"),
        ("mlflow-artifacts:/1/m", "./mlartifacts", "is not s3://bucket"),
        ("mlflow-artifacts:/", "s3://mlflow/", "names no path"),
    ],
)
def test_a_location_kserve_cannot_reach_is_refused(artifact_uri: str, destination: str, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        store_uri(artifact_uri, destination)


def test_the_rendered_service_names_the_version_and_its_run_and_validates() -> None:
    rendered = render(template(), version("3"), name="pytorch-simplenn-mnist")
    predictor = rendered["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://mlflow/1/models/m-3/artifacts"
    assert "canaryTrafficPercent" not in predictor
    for holder in (rendered["metadata"], predictor):
        assert holder["labels"]["mlops-sandbox/model-version"] == "3"
        assert holder["labels"]["mlops-sandbox/run-id"] == RUN
        assert holder["annotations"]["mlops-sandbox/model-uri"] == "models:/pytorch_simplenn_mnist/3"
        assert holder["annotations"]["mlops-sandbox/model-ref"] == "@production"
    assert validate_object(rendered, "test", crd_validators()).errors == ()
    assert template()["spec"]["predictor"]["model"]["storageUri"].endswith("render-with-sandbox-kserve")


def test_the_canary_form_sends_its_share_to_the_canary() -> None:
    rendered = render(template(), version("3"), name="isvc", canary=version("4", "4"), percent=10)
    predictor = rendered["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["storageUri"] == "s3://mlflow/1/models/m-4/artifacts"
    assert predictor["labels"]["mlops-sandbox/model-version"] == "4"
    assert rendered["metadata"]["annotations"]["mlops-sandbox/stable-version"] == "3"
    assert validate_object(rendered, "test", crd_validators()).errors == ()
    # Rendering the stable version again (a rollback, or after the promotion) removes the split.
    assert "canaryTrafficPercent" not in render(rendered, version("4"), name="isvc")["spec"]["predictor"]


@pytest.mark.parametrize(
    ("canary", "percent", "message"),
    [("4", None, "go together"), ("4", 100, "1 to 99"), ("3", 10, "already points at")],
)
def test_a_canary_that_makes_no_sense_is_refused(canary: str, percent: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(template(), version("3"), name="isvc", canary=version(canary), percent=percent)


def test_service_names_follow_dns_1035() -> None:
    assert service_name("pytorch_simplenn_mnist") == "pytorch-simplenn-mnist"
    assert service_name("2nd.Model_v1") == "nd-model-v1"
    with pytest.raises(RenderError):
        service_name("___")


def test_the_command_refuses_what_kserve_cannot_download(
    client: MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The unit registry's versions live in a local folder, as a store without --serve-artifacts keeps them.
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "MLmodel").write_text("flavors: {}\n")
    assert kserve.main(["2"]) == 1
    assert "which KServe cannot download" in capsys.readouterr().err
    assert kserve.main(["@production"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_canary_options_are_checked_before_the_registry_is_asked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        kserve.main(["@production", "--canary", "4"])
    assert exited.value.code == 2
    assert "--canary and --percent go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        kserve.main(["@production", "--canary", "4", "--percent", "0"])
    assert "1 to 99" in capsys.readouterr().err


def test_the_server_destination_comes_from_the_manifests_settings() -> None:
    data = {"X": "1"}
    documents: list[Any] = [{"kind": "ConfigMap", "metadata": {"name": "sandbox-settings"}, "data": data}]
    assert kserve.settings_destination(documents) is None
    data["MLFLOW_ARTIFACTS_DESTINATION"] = "s3://mlops-sandbox-artifacts/"
    assert kserve.settings_destination(documents) == "s3://mlops-sandbox-artifacts/"
