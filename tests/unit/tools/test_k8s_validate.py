"""The Kubernetes manifests, checked offline: every overlay builds with the real `kubectl kustomize`, and every
object validates (Kubernetes' schemas, KServe's CRDs); a broken field or a broken overlay fails."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlserver.settings import ModelParameters, ModelSettings, Settings

from tools import k8s_validate
from tools.k8s_validate import K8S_DIR, ManifestError, crd_validators, kustomize, load_documents, validate_object

Objects = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def built() -> Objects:
    """Every overlay's objects, by overlay name, built once for the module (kubectl takes a second or two)."""
    return {overlay.name: load_documents(kustomize(overlay), overlay.name) for overlay in k8s_validate.overlays()}


@pytest.fixture(scope="module")
def crds() -> dict[Any, Any]:
    return crd_validators()


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = (o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))
    return copy.deepcopy(found)


def test_every_overlay_builds_and_every_object_is_valid(built: Objects, crds: dict[Any, Any]) -> None:
    assert set(built) == {"local-cluster", "managed-cloud"}
    for overlay, objects in built.items():
        results = [validate_object(obj, overlay, crds) for obj in objects]
        assert [r.line() for r in results if r.errors] == []
        schemas = {(r.kind, r.schema) for r in results}
        assert ("InferenceService", "KServe v0.20.0 CRD, strict") in schemas
        assert ("Deployment", "Kubernetes 1.37.0, strict") in schemas
        kinds = {o["kind"] for o in objects}
        assert {"Deployment", "Service", "Job", "ServiceAccount", "NetworkPolicy", "InferenceService"} <= kinds


@pytest.mark.parametrize(
    ("kind", "break_it", "message"),
    [
        # A typo KServe would drop without a word, and a type it would refuse.
        ("InferenceService", lambda o: o["spec"]["predictor"].update(canaryTraficPercent=10), "canaryTraficPercent"),
        ("InferenceService", lambda o: o["spec"]["predictor"].update(minReplicas="two"), "'two' is not of type"),
        ("ServingRuntime", lambda o: o["spec"]["containers"][0].update(env={"A": "1"}), "is not of type 'array'"),
        ("Deployment", lambda o: o["spec"].update(replica=2), "'replica' was unexpected"),
        ("NetworkPolicy", lambda o: o["spec"].update(policyTypes="Ingress"), "is not of type 'array'"),
        ("Service", lambda o: o["metadata"].update(name="MLflow_Server"), "not a valid Service name"),
        ("Job", lambda o: o["metadata"]["labels"].update({"mlops-sandbox/run": "a b"}), "mlops-sandbox/run"),
    ],
)
def test_a_broken_field_fails(built: Objects, crds: dict[Any, Any], kind: str, break_it: Any, message: str) -> None:
    names = {"Deployment": "mlflow", "Service": "mlflow", "NetworkPolicy": "mlflow", "Job": "training"}
    obj = find(built["local-cluster"], kind, names.get(kind))
    assert validate_object(obj, "test", crds).errors == ()
    break_it(obj)
    errors = validate_object(obj, "test", crds).errors
    assert any(message in error for error in errors), errors


def test_a_broken_overlay_fails_with_kubectls_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, tree)
    kustomization = tree / "overlays" / "local-cluster" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("- postgres.yaml", "- postgresql.yaml"))
    monkeypatch.setattr(k8s_validate, "K8S_DIR", tree)
    with pytest.raises(ManifestError, match="postgresql.yaml"):
        kustomize(tree / "overlays" / "local-cluster")


def test_the_command_exits_1_on_an_invalid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(k8s_validate, "overlays", list)  # the files alone; the overlays are tested above
    documents = list(yaml.safe_load_all((K8S_DIR / "base" / "serving.yaml").read_text()))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all(documents))
    assert k8s_validate.main([str(good)]) == 0
    documents[2]["spec"]["predictor"]["model"]["storageURI"] = "s3://mlflow/x"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(documents))
    assert k8s_validate.main([str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "InferenceService pytorch-simplenn-mnist: INVALID" in out and "'storageURI' was unexpected" in out
    assert "1 invalid objects" in err


def test_no_secret_is_written_in_any_manifest(built: Objects) -> None:
    committed = subprocess.run(
        ["git", "ls-files", "infra/k8s"], cwd=K8S_DIR.parents[1], capture_output=True, text=True, check=True
    ).stdout.split()
    assert committed, "no manifest is committed"
    for path in committed:
        text = (K8S_DIR.parents[1] / path).read_text()
        if path.endswith(".yaml") and "/crds/" not in path:
            assert all(doc.get("kind") != "Secret" for doc in yaml.safe_load_all(text) if doc), path
        # The credentials of the examples are placeholders, which SANDBOX_ENVIRONMENT=cluster refuses.
        for line in text.splitlines():
            if path.endswith(".env.example") and line.startswith(("AWS_SECRET", "POSTGRES_PASSWORD", "MLFLOW_BACK")):
                assert "change-me" in line, f"{path}: {line}"
        assert not path.endswith((".env",)) or path.endswith("settings.env"), f"{path} is committed"
    ignored = subprocess.run(
        [
            "git",
            "check-ignore",
            "infra/k8s/overlays/local-cluster/s3.env",
            "infra/k8s/overlays/managed-cloud/database.env",
        ],
        cwd=K8S_DIR.parents[1],
        capture_output=True,
        text=True,
    )
    assert len(ignored.stdout.split()) == 2, "the secrets' env files must be git-ignored"
    for objects in built.values():
        settings = find(objects, "ConfigMap", "sandbox-settings")
        assert settings["data"]["SANDBOX_ENVIRONMENT"] == "cluster"


def test_images_are_the_projects_own_by_tag_or_pinned(built: Objects) -> None:
    for objects in built.values():
        images = {container["image"] for obj in objects for container in _containers(obj)}
        assert {"mlops-sandbox/mlflow:0.1.0", "mlops-sandbox/ml:0.1.0"} <= images
        for image in images:
            assert ":" in image and not image.endswith(":latest"), image


def test_the_runtime_sets_kserves_mlserver_variables_and_names_only_mlservers_own(built: Objects) -> None:
    runtime = find(built["managed-cloud"], "ServingRuntime")
    env = {item["name"]: item["value"] for item in runtime["spec"]["containers"][0]["env"]}
    assert env["MLSERVER_MODEL_IMPLEMENTATION"] == "mlserver_mlflow.MLflowRuntime"
    assert env["MLSERVER_MODEL_URI"] == "/mnt/models"
    read_by_mlserver = (
        {f"MLSERVER_{name.upper()}" for name in Settings.model_fields}
        | {f"MLSERVER_MODEL_{name.rstrip('_').upper()}" for name in ModelSettings.model_fields}
        | {f"MLSERVER_MODEL_{name.upper()}" for name in ModelParameters.model_fields}
    )
    assert {name for name in env if name.startswith("MLSERVER_")} <= read_by_mlserver
    isvc = find(built["managed-cloud"], "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] == "mlflow"
    assert isvc["spec"]["predictor"]["model"]["protocolVersion"] == "v2"
    assert isvc["spec"]["predictor"]["maxReplicas"] == 10


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj["kind"] == "ServingRuntime":
        return list(spec["containers"])
    pod = (spec.get("template") or {}).get("spec") or {}
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))
