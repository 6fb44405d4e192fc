"""Generate docs/settings.md and .env.example from the settings classes, or check that they are current.

    python -m tools.settings_docs          # write both files
    python -m tools.settings_docs --check  # exit 1, naming the file, when either differs from what it would write

Every variable is declared once, in one settings class; the tables and the example file are read off the
classes: their variable names, defaults, examples and docstrings (pydantic's use_attribute_docstrings).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from infra.local.settings import LocalStackSettings
from infra.ops.rollout.settings import RolloutSettings
from infra.settings import ComposeSettings, StackSettings
from mlops_sandbox.settings import (
    ArtifactStoreSettings,
    AuthSettings,
    EndpointSettings,
    MnistSettings,
    ModelReference,
    SandboxSettings,
    TrackingClientSettings,
)
from services.mlflow.settings import TrackingServerSettings
from services.prometheus.settings import PrometheusSettings
from services.router.settings import RouterSettings
from services.s3.settings import S3ServerSettings
from services.serving.settings import ServingSettings
from services.traffic.settings import TrafficSettings
from training.settings import TrainingSettings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "settings.md"
ENV_EXAMPLE = ROOT / ".env.example"


@dataclass(frozen=True)
class Section:
    """One group of variables: a settings class, and who reads it."""

    title: str
    settings: type[BaseModel]
    read_by: str


SECTIONS = (
    Section("Compose: images, profiles, PostgreSQL", ComposeSettings, "compose.yaml"),
    Section("Ports, bucket and final check", StackSettings, "compose.yaml and the local stack"),
    Section("The registered model", ModelReference, "training, serving, predict, the registry CLI, the rehearsal"),
    Section("Clients of the tracking server", TrackingClientSettings, "training, serving, predict, the CLIs"),
    Section("MNIST", MnistSettings, "training, predict, the gate, the rehearsal"),
    Section("Object store", ArtifactStoreSettings, "the tracking server, create-bucket, the S3 stand-in"),
    Section("MLflow tracking server", TrackingServerSettings, "services/mlflow"),
    Section(
        "Authentication (MLflow's basic-auth app)",
        AuthSettings,
        "the tracking server, the local stack and the `sandbox` command",
    ),
    Section("Training job", TrainingSettings, "training/"),
    Section("Serving (MLServer through `mlflow models serve --enable-mlserver`)", ServingSettings, "services/serving"),
    Section("Gate and rehearsal", EndpointSettings, "`infra.ops.registry promote --gate`, `infra.ops.rehearsal`"),
    Section("S3 stand-in (`rclone serve s3`)", S3ServerSettings, "services/s3"),
    Section("Router (Envoy)", RouterSettings, "services/router"),
    Section("Prometheus", PrometheusSettings, "services/prometheus"),
    Section("Traffic generator", TrafficSettings, "services/traffic"),
    Section("Rollouts", RolloutSettings, "`infra.ops.rollout` and its rehearsals"),
    Section("Local stack", LocalStackSettings, "`bash infra/sandbox.sh` (infra/local)"),
    Section("Every process", SandboxSettings, "every entrypoint of the project"),
)


@dataclass(frozen=True)
class Variable:
    """One environment variable, as its settings class declares it."""

    name: str
    default: str
    example: str
    doc: str
    per_process: bool
    in_env_example: bool
    comment_example: str | None


def _text(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)


def _extra(field: FieldInfo) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def own_fields(settings: type[BaseModel]) -> dict[str, FieldInfo]:
    """The fields that `settings` declares itself: not inherited, and not a composed settings class."""
    inherited: set[str] = set()
    for base in settings.__mro__[1:]:
        if isinstance(base, type) and issubclass(base, BaseModel):
            inherited |= set(base.model_fields)
    return {
        name: field
        for name, field in settings.model_fields.items()
        if (name not in inherited or settings is SandboxSettings) and field.default_factory is None
    }


def variables(settings: type[BaseModel]) -> list[Variable]:
    """The variables of `settings`'s own fields, in declaration order."""
    found = []
    for field in own_fields(settings).values():
        default = _text(field.default)
        example = _text(field.examples[0]) if field.examples else default
        found.append(
            Variable(
                name=str(field.validation_alias),
                default=default,
                example=example,
                doc=" ".join((field.description or "").split()),
                per_process=bool(_extra(field).get("per_process")),
                in_env_example=bool(_extra(field).get("env_example")),
                comment_example=_extra(field).get("example_comment"),
            )
        )
    return found


def markdown() -> str:
    """docs/settings.md."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated by `python -m tools.settings_docs` from the settings classes; do not edit by hand. -->",
        "",
        "Every setting is an environment variable. A variable that a library reads keeps that library's name",
        "(`MLFLOW_*`, `MLSERVER_*`, `AWS_*`, `POSTGRES_*`, `OMP_NUM_THREADS`, `COMPOSE_PROFILES`); the ones this",
        "project invents start with `SANDBOX_`. Compose reads `.env`; so does the local stack (`bash",
        "infra/sandbox.sh`), and in both a variable set in your environment wins over `.env`. `.env.example`",
        "lists every variable you may set, with its default.",
        "",
        "Variables marked *per process* are set by compose and the local stack for each process (its address, its",
        "port inside the container, its folder); set them yourself only when you run an entrypoint by hand.",
        "",
    ]
    for section in SECTIONS:
        rows = variables(section.settings)
        if not rows:
            continue
        doc = " ".join((section.settings.__doc__ or "").split("\n\n")[0].split())
        lines += [f"## {section.title}", "", f"{doc} Read by {section.read_by}.", ""]
        lines += ["| variable | default | meaning |", "|---|---|---|"]
        for var in rows:
            default = f"`{var.default}`" if var.default else "unset"
            meaning = var.doc.replace("|", "\\|") + (" *Per process.*" if var.per_process else "")
            lines.append(f"| `{var.name}` | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def env_example() -> str:
    """.env.example: the few settings a user must set, or sets first, with their example values."""
    lines = [
        "# The sandbox's settings, for `docker compose` and the local stack (bash infra/sandbox.sh) alike:",
        "#   cp .env.example .env     # then replace every value that starts with change-me",
        "# Compose refuses the change-me placeholders; the local stack accepts them. These are the settings you",
        "# must set, or set first; every other one, with its default and meaning, is in docs/settings.md, and may",
        "# be added here. Generated by `python -m tools.settings_docs` from the settings classes.",
    ]
    listed = [var for section in SECTIONS for var in variables(section.settings) if var.in_env_example]
    # The secrets first: compose refuses to start until they are your own.
    for var in sorted(listed, key=lambda var: not var.example.startswith("change-me")):
        lines += [""] + textwrap.wrap(var.doc, width=108, initial_indent="# ", subsequent_indent="# ")
        lines.append(f"{var.name}={var.example}")
        if var.comment_example:
            lines.append(f"# {var.name}={var.comment_example}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.settings_docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in ((DOCS, markdown()), (ENV_EXAMPLE, env_example())):
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date with the settings classes: {', '.join(map(str, stale))}; run python -m tools.settings_docs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
