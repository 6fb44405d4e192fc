"""Validate the Kubernetes manifests offline: build every overlay, then check every object against its schema.

    python -m tools.k8s_validate                      # every overlay of infra/k8s
    python -m tools.k8s_validate rendered.yaml -      # these files too ('-': standard input), for example
                                                      # the output of `sandbox kserve @production`

No cluster is needed, nor reached. Each overlay is built by the real `kubectl kustomize` (Debian's
kubernetes-client), from a copy of infra/k8s in which every git-ignored `*.env` that is missing is the
`*.env.example` beside it, as a fresh clone has after `cp`. Then:
- Kubernetes' own objects validate with kubernetes-validate against the OpenAPI schemas of Kubernetes
  KUBERNETES_VERSION, strict (an unknown field is an error, as with `kubectl apply --validate=strict`);
- KServe's objects (InferenceService, ServingRuntime) validate against the openAPIV3Schema of the CRDs of
  KServe KSERVE_VERSION committed in infra/k8s/crds/ (their source is noted there), also strict;
- every object's name and labels follow Kubernetes' rules for them (which schemas leave out).

Prints one line per object; exits 1 when any object, file or overlay fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import functools
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

K8S_DIR = Path(__file__).resolve().parents[1] / "infra" / "k8s"
OVERLAYS_DIR = K8S_DIR / "overlays"
# One current minor version of Kubernetes; kubernetes-validate ships its schemas offline.
KUBERNETES_VERSION = "1.37.0"
KSERVE_VERSION = "v0.20.0"
KSERVE_CRDS = K8S_DIR / "crds" / f"kserve-{KSERVE_VERSION}"

# Kubernetes' rules for names and labels (k8s.io/apimachinery/pkg/util/validation).
DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


class ManifestError(RuntimeError):
    """An overlay that does not build, or a file that is not YAML; the message says which and why."""


@dataclass(frozen=True)
class Result:
    """One object's verdict: `errors` is empty when it is valid against `schema` (which schema was used)."""

    source: str
    api_version: str
    kind: str
    name: str
    schema: str
    errors: tuple[str, ...]

    def line(self) -> str:
        verdict = "valid" if not self.errors else "INVALID: " + "; ".join(self.errors)
        return f"  {self.api_version}/{self.kind} {self.name}: {verdict} ({self.schema})"


@functools.cache
def kubectl() -> str:
    """The path of a kubectl whose kustomize is v5 or later; ManifestError naming what to install otherwise.

    The kustomizations use `labels`, `envs` and `patches`, which kustomize v5 (kubectl 1.27 and later) reads
    and v2 (Debian bookworm's kubernetes-client, kubectl 1.20) does not.
    """
    path = shutil.which("kubectl")
    if path is None:
        raise ManifestError("kubectl is not installed: apt-get install kubernetes-client (1.27 or later)")
    shown = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    found = re.search(r'"kustomizeVersion":\s*"v(\d+)', shown.stdout)
    if found is None or int(found.group(1)) < 5:
        version = re.search(r'"gitVersion":\s*"([^"]+)', shown.stdout)
        raise ManifestError(
            f"{path} ({version.group(1) if version else 'version unknown'}) does not embed kustomize v5 or later: "
            "kubectl 1.27 or later is needed"
        )
    return path


def kustomize(overlay: Path) -> str:
    """`kubectl kustomize` of `overlay` (a folder under infra/k8s/overlays) from a copy of infra/k8s in which
    every missing `*.env` is its `*.env.example`; ManifestError with kubectl's message when it fails."""
    with tempfile.TemporaryDirectory(prefix="sandbox-k8s-") as tmp:
        tree = Path(tmp) / "k8s"
        shutil.copytree(K8S_DIR, tree, ignore=shutil.ignore_patterns("crds"))
        for example in tree.rglob("*.env.example"):
            target = example.with_name(example.name.removesuffix(".example"))
            if not target.exists():
                shutil.copyfile(example, target)
        built = subprocess.run(
            [kubectl(), "kustomize", str(tree / overlay.relative_to(K8S_DIR))],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if built.returncode != 0:
        raise ManifestError(f"kubectl kustomize {overlay.relative_to(K8S_DIR)} failed: {built.stderr.strip()}")
    return built.stdout


def load_documents(text: str, source: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML stream, empty documents left out; ManifestError when it is not
    YAML or a document is not an object with apiVersion and kind."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"{source} is not valid YAML: {err}") from err
    for doc in documents:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            raise ManifestError(f"{source}: every document must be an object with apiVersion and kind")
    return documents


def strict_schema(schema: Any) -> Any:
    """A copy of an openAPIV3Schema in which objects accept only their declared properties, as the API
    server's strict field validation does, except where the CRD keeps unknown fields on purpose."""
    schema = copy.deepcopy(schema)

    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(schema)
    return schema


@functools.cache
def crd_validators(folder: Path = KSERVE_CRDS) -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """A validator per (apiVersion, kind) served by the CRDs (YAML files) in `folder`, strict; read once."""
    validators = {}
    # libyaml's parser where PyYAML has it: the InferenceService CRD is 2 MB.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=loader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict_schema(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def metadata_errors(obj: dict[str, Any]) -> list[str]:
    """Kubernetes' rules for the name and the labels of `obj`, which no OpenAPI schema carries."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name", ""))
    errors = []
    # KServe derives Service and DNS names from an InferenceService's name: a DNS-1035 label.
    pattern, limit = (DNS_1035_LABEL, 63) if obj["kind"] == "InferenceService" else (DNS_1123_SUBDOMAIN, 253)
    if not pattern.fullmatch(name) or len(name) > limit:
        errors.append(f"metadata.name {name!r} is not a valid {obj['kind']} name")
    for key, value in (metadata.get("labels") or {}).items():
        prefix, _, label = str(key).rpartition("/")
        if (prefix and not DNS_1123_SUBDOMAIN.fullmatch(prefix)) or not LABEL_NAME.fullmatch(label) or len(label) > 63:
            errors.append(f"label key {key!r} is not valid")
        if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value) or len(value) > 63:
            errors.append(f"label {key}={value!r}: a value is a string of at most 63 letters, digits, '-_.'")
    return errors


def validate_object(
    obj: dict[str, Any], source: str, crds: dict[tuple[str, str], jsonschema.Draft7Validator]
) -> Result:
    """One object against the schema of its kind: a KServe CRD's, or Kubernetes KUBERNETES_VERSION's."""
    api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
    name = str((obj.get("metadata") or {}).get("name", "?"))
    errors = metadata_errors(obj)
    validator = crds.get((api_version, kind))
    if validator is not None:
        schema = f"KServe {KSERVE_VERSION} CRD, strict"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(part) for part in error.absolute_path) or "(root)"
            errors.append(f"{path}: {error.message}")
    else:
        schema = f"Kubernetes {KUBERNETES_VERSION}, strict"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(part) for part in err.path) or "(root)"
            errors.append(f"{path}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"no schema for {api_version}/{kind} in Kubernetes {KUBERNETES_VERSION} or the CRDs")
    return Result(source, api_version, kind, name, schema, tuple(errors))


def validate_documents(
    documents: Iterable[dict[str, Any]], source: str, crds: dict[tuple[str, str], jsonschema.Draft7Validator]
) -> list[Result]:
    """Every object of `documents`, validated."""
    return [validate_object(obj, source, crds) for obj in documents]


def overlays() -> list[Path]:
    """Every overlay folder under infra/k8s/overlays, by name."""
    return sorted(path.parent for path in OVERLAYS_DIR.glob("*/kustomization.yaml"))


def sources(files: list[str]) -> Iterator[tuple[str, str]]:
    """(name, YAML text) of every overlay's build, then of each file ('-' is standard input)."""
    for overlay in overlays():
        yield f"overlay {overlay.name} (kubectl kustomize)", kustomize(overlay)
    for file in files:
        yield (file, sys.stdin.read()) if file == "-" else (file, Path(file).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.k8s_validate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="*", help="YAML files to validate as well ('-' for standard input)")
    args = parser.parse_args(argv)
    crds = crd_validators()
    failed = 0
    try:
        for source, text in sources(args.files):
            results = validate_documents(load_documents(text, source), source, crds)
            print(f"{source}: {len(results)} objects")
            for result in results:
                print(result.line())
            failed += sum(1 for result in results if result.errors)
    except (ManifestError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if failed:
        print(f"{failed} invalid objects", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
