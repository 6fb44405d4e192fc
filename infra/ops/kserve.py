"""Render KServe's InferenceService for a registered version: the registry's answer, as a manifest.

    python -m infra.ops.kserve @production                       # the InferenceService, YAML on stdout
    python -m infra.ops.kserve 3                                 # a version number (or a stage)
    python -m infra.ops.kserve @production --canary 4 --percent 10   # version 4 takes 10 % of the traffic
    kubectl kustomize infra/k8s/overlays/local-cluster | python -m infra.ops.kserve @production --manifests - \\
        | kubectl apply -f -                                     # every object, the InferenceService rendered

It resolves the reference through the registry (MLFLOW_TRACKING_URI), reads where the version's artifacts
are (`mlflow-artifacts:/...`, the tracking server's proxy) and turns that into the object-store URI behind
the proxy, `s3://bucket/...`, from the server's artifact destination: --artifacts-destination, else the
MLFLOW_ARTIFACTS_DESTINATION of the `sandbox-settings` ConfigMap in --manifests, else the variable
MLFLOW_ARTIFACTS_DESTINATION, else the sandbox's own s3://SANDBOX_S3_BUCKET/. KServe's storage initializer
downloads that prefix to /mnt/models, where MLServer's MLflow runtime loads it.

The template is the InferenceService of infra/k8s/base/serving.yaml, or the one in --manifests. The rendered
object carries the version in labels (on the InferenceService and, through spec.predictor.labels, on its
pods) and its run in annotations, so `kubectl get pods -l mlops-sandbox/model-version=3` finds the pods and
their run id leads back to the MLflow run. With --canary, the predictor is the canary version and
canaryTrafficPercent sends it that share; KServe (Knative mode) keeps the rest on the last revision that
rolled out, which must be the version the reference names (apply its render first).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from infra.settings import StackSettings
from mlops_sandbox.references import model_uri
from mlops_sandbox.registry import RegistryError, resolve_version
from mlops_sandbox.settings import ModelReference, TrackingClientSettings, command_name
from mlops_sandbox.tracking import connect
from mlops_sandbox.waiting import DependencyUnavailable, on_stderr

TEMPLATE = Path(__file__).resolve().parents[1] / "k8s" / "base" / "serving.yaml"
SETTINGS_CONFIGMAP = "sandbox-settings"
# Our own label and annotation keys carry the project's prefix.
VERSION_LABEL = "mlops-sandbox/model-version"
MODEL_LABEL = "mlops-sandbox/registered-model"
RUN_LABEL = "mlops-sandbox/run-id"
MODEL_URI_ANNOTATION = "mlops-sandbox/model-uri"
REF_ANNOTATION = "mlops-sandbox/model-ref"
ARTIFACT_ANNOTATION = "mlops-sandbox/artifact-uri"
STABLE_ANNOTATION = "mlops-sandbox/stable-version"


class RenderError(RuntimeError):
    """A version that cannot be served from the object store, or a template without an InferenceService."""


@dataclass(frozen=True)
class ServedVersion:
    """A registered version and where KServe finds it: `storage_uri` is s3://bucket/prefix (no trailing /)."""

    name: str
    version: str
    run_id: str
    ref: str
    artifact_uri: str
    storage_uri: str

    @property
    def model_uri(self) -> str:
        """models:/NAME/VERSION: the pinned URI of the version, whatever reference found it."""
        return model_uri(self.name, self.version)


def store_uri(artifact_uri: str, artifacts_destination: str) -> str:
    """The object-store URI behind an artifact location, without a trailing slash.

    `mlflow-artifacts:/1/models/m-1/artifacts` (or `mlflow-artifacts://host:port/1/...`) is a path under the
    tracking server's --artifacts-destination (`s3://mlflow/` gives `s3://mlflow/1/models/m-1/artifacts`);
    an `s3://` location is returned as it is. RenderError for anything else (a local folder, another
    store), and for a destination that is not s3://bucket[/prefix]: KServe's storage initializer downloads
    from S3 here, with no tracking server in between.
    """
    destination = urlparse(artifacts_destination)
    if destination.scheme != "s3" or not destination.netloc:
        raise RenderError(
            f"the artifact destination {artifacts_destination!r} is not s3://bucket/...: set "
            "MLFLOW_ARTIFACTS_DESTINATION (or --artifacts-destination) to the tracking server's"
        )
    location = urlparse(artifact_uri)
    if location.scheme == "s3" and location.netloc:
        return artifact_uri.rstrip("/")
    if location.scheme != "mlflow-artifacts":
        raise RenderError(
            f"the version's artifacts are at {artifact_uri!r}, which KServe cannot download: "
            "serve from a tracking server with --serve-artifacts and an s3:// artifact destination"
        )
    path = location.path.strip("/")
    if not path:
        raise RenderError(f"the artifact location {artifact_uri!r} names no path")
    return f"s3://{destination.netloc}/{'/'.join(p for p in (destination.path.strip('/'), path) if p)}"


def served_version(client: MlflowClient, name: str, ref: str, artifacts_destination: str) -> ServedVersion:
    """Resolve `ref` ("3", "@production", "Production") through the registry and locate its artifacts.

    RegistryError when the reference points at no version; RenderError when the version's artifacts are not
    in the object store or hold no MLmodel (listed through the tracking server's proxy).
    """
    version = resolve_version(client, name, ref)
    try:
        model_version = client.get_model_version(name, version)
        artifact_uri = client.get_model_version_download_uri(name, version)
        listed = {Path(entry.path).name for entry in mlflow.artifacts.list_artifacts(artifact_uri=artifact_uri)}
    except MlflowException as err:
        raise RenderError(f"cannot read {name} version {version}'s artifacts: {err.message}") from err
    if "MLmodel" not in listed:
        raise RenderError(f"{artifact_uri} holds no MLmodel: {name} version {version} is not a model KServe can load")
    return ServedVersion(
        name=name,
        version=version,
        run_id=model_version.run_id or "",
        ref=ref.strip(),
        artifact_uri=artifact_uri,
        storage_uri=store_uri(artifact_uri, artifacts_destination),
    )


def service_name(model_name: str) -> str:
    """An InferenceService name for a registered model: a DNS-1035 label (pytorch_simplenn_mnist gives
    pytorch-simplenn-mnist), as KServe derives host names from it."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:63].rstrip("-")
    if not name:
        raise RenderError(f"no InferenceService name can be made from {model_name!r}: pass --name")
    return name


def render(
    template: dict[str, Any],
    served: ServedVersion,
    *,
    name: str,
    canary: ServedVersion | None = None,
    percent: int | None = None,
) -> dict[str, Any]:
    """The InferenceService `template` (a dict, not modified) for `served`, or its canary form.

    Sets metadata.name, spec.predictor.model.storageUri, the version labels and run annotations on the
    object and on spec.predictor (KServe puts those on the pods). With `canary` and `percent` (1-99), the
    predictor serves `canary` and spec.predictor.canaryTrafficPercent is `percent`; `served` is recorded as
    the stable version. Without them, any canaryTrafficPercent of the template is removed: 100 % to `served`.
    """
    if (canary is None) != (percent is None):
        raise ValueError("--canary and --percent go together")
    if percent is not None and not 1 <= percent <= 99:
        raise ValueError(f"--percent must be 1 to 99, got {percent}: render without --canary to serve one version")
    if canary is not None and canary.version == served.version:
        raise ValueError(f"the canary is version {canary.version}, which {served.ref} already points at")
    rendered: dict[str, Any] = yaml.safe_load(yaml.safe_dump(template))
    target = canary or served
    labels = {VERSION_LABEL: target.version, MODEL_LABEL: target.name, RUN_LABEL: target.run_id}
    annotations = {
        MODEL_URI_ANNOTATION: target.model_uri,
        REF_ANNOTATION: target.ref,
        ARTIFACT_ANNOTATION: target.artifact_uri,
    }
    if canary is not None:
        annotations[STABLE_ANNOTATION] = served.version
    metadata = rendered.setdefault("metadata", {})
    metadata["name"] = name
    predictor = rendered.setdefault("spec", {}).setdefault("predictor", {})
    for holder in (metadata, predictor):
        holder.setdefault("labels", {}).update({k: v for k, v in labels.items() if v})
        holder.setdefault("annotations", {}).update(annotations)
    predictor.setdefault("model", {})["storageUri"] = target.storage_uri
    if percent is None:
        predictor.pop("canaryTrafficPercent", None)
    else:
        predictor["canaryTrafficPercent"] = percent
    return rendered


def is_inference_service(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == "InferenceService"


def settings_destination(documents: list[Any]) -> str | None:
    """MLFLOW_ARTIFACTS_DESTINATION of the sandbox-settings ConfigMap among `documents`: the server's own."""
    for obj in documents:
        if isinstance(obj, dict) and obj.get("kind") == "ConfigMap":
            if (obj.get("metadata") or {}).get("name") == SETTINGS_CONFIGMAP:
                value = (obj.get("data") or {}).get("MLFLOW_ARTIFACTS_DESTINATION")
                return str(value) if value else None
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=command_name("infra.ops.kserve"), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ref", nargs="?", default="@production", help="version, @alias or stage (default @production)")
    parser.add_argument("--canary", metavar="VERSION", help="a version to send --percent of the traffic to")
    parser.add_argument("--percent", type=int, help="the canary's share of traffic, 1 to 99 (canaryTrafficPercent)")
    parser.add_argument("--model-name", help="overrides SANDBOX_MODEL_NAME")
    parser.add_argument("--tracking-uri", help="overrides MLFLOW_TRACKING_URI")
    parser.add_argument("--name", help="the InferenceService's name (default: from the model name)")
    parser.add_argument("--artifacts-destination", help="the tracking server's, e.g. s3://mlflow/ (see above)")
    parser.add_argument(
        "--manifests",
        metavar="FILE",
        help="a YAML stream ('-' for stdin), e.g. kubectl kustomize's output: print all of it, its "
        "InferenceService rendered",
    )
    args = parser.parse_args(argv)
    if (args.canary is None) != (args.percent is None):
        parser.error("--canary and --percent go together")
    if args.percent is not None and not 1 <= args.percent <= 99:
        parser.error("--percent must be 1 to 99: render without --canary to send all traffic to one version")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = {"tracking_uri": args.tracking_uri} if args.tracking_uri else {}
        client = connect(TrackingClientSettings(**overrides), notice=on_stderr)
        name = args.model_name or ModelReference().name
        if args.manifests:
            text = sys.stdin.read() if args.manifests == "-" else Path(args.manifests).read_text()
        else:
            text = TEMPLATE.read_text()
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        templates = [doc for doc in documents if is_inference_service(doc)]
        if len(templates) != 1:
            raise RenderError(f"expected one InferenceService in {args.manifests or TEMPLATE}, found {len(templates)}")
        destination = (
            args.artifacts_destination
            or (settings_destination(documents) if args.manifests else None)
            or _environment_destination()
        )
        served = served_version(client, name, args.ref, destination)
        canary = served_version(client, name, args.canary, destination) if args.canary else None
        rendered = render(
            templates[0], served, name=args.name or service_name(name), canary=canary, percent=args.percent
        )
    except (ValidationError, ValueError, yaml.YAMLError, OSError) as err:
        print(f"invalid input: {err}", file=sys.stderr)
        return 2
    except (RegistryError, RenderError, DependencyUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = [rendered if is_inference_service(doc) else doc for doc in documents] if args.manifests else [rendered]
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False))
    if canary is not None:
        print(
            f"canary: version {canary.version} takes {args.percent} % of the traffic, the last rolled-out revision "
            f"(version {served.version}, {served.ref}) the rest",
            file=sys.stderr,
        )
    return 0


def _environment_destination() -> str:
    return os.environ.get("MLFLOW_ARTIFACTS_DESTINATION") or f"s3://{StackSettings().s3_bucket}/"


if __name__ == "__main__":
    sys.exit(main())
