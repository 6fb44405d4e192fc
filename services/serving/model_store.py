"""The served model on local disk: registered versions downloaded once, and a `current` link to one of them.

    <root>/versions/<N>/           a registered version, as `mlflow artifacts download` gives it, plus the
                                   model-settings.json that tells MLServer its name and registry version,
                                   and the server's settings.json (performance settings)
    <root>/current -> versions/N   what the server is pointed at; switched atomically

`mlflow models serve -m <root>/current --enable-mlserver` hands that path straight to `mlserver start`,
so repointing the link and asking MLServer to reload the model switches versions without a restart.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlserver.settings import ModelSettings, Settings
from pydantic import AliasChoices, BaseModel

if TYPE_CHECKING:
    from services.serving.settings import ServingSettings

RUNTIME = "services.serving.runtime.RegistryModelRuntime"


def mlserver_file(model: type[BaseModel], fields: dict[str, Any]) -> str:
    """`fields` as the JSON of one of MLServer's settings files, validated by MLServer's own class.

    `model` is mlserver.settings.Settings (settings.json) or ModelSettings (model-settings.json). Those
    classes ignore a field they do not know, and fill the others in from MLSERVER_* variables and a .env
    file; so an unknown field is refused here (ValueError), and only `fields` are written. A value of the
    wrong type raises pydantic's ValidationError.
    """
    names: dict[str, str] = {}
    for name, info in model.model_fields.items():
        choices = info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else []
        for key in (name, info.alias, info.serialization_alias, *choices):
            if isinstance(key, str):
                names[key] = name
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise ValueError(f"{model.__name__} has no field {', '.join(unknown)}")
    include: dict[str, Any] = {}
    for key, value in fields.items():
        include[names[key]] = dict.fromkeys(value, True) if isinstance(value, dict) else True
    return model.model_validate(fields).model_dump_json(by_alias=True, include=include, indent=2)


class ModelStore:
    """The served versions under `root` (see the module docstring) and the MLServer settings written with each."""

    def __init__(
        self,
        root: Path,
        model_name: str,
        server_settings: dict[str, object] | None = None,
        runtime_settings: dict[str, object] | None = None,
        model_settings: dict[str, object] | None = None,
    ) -> None:
        self.root = root
        self.model_name = model_name
        self.server_settings = server_settings or {}
        self.runtime_settings = runtime_settings or {}
        self.model_settings = model_settings or {}
        self.versions = root / "versions"
        self.current = root / "current"
        self.versions.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_serving(cls, settings: ServingSettings, root: Path) -> ModelStore:
        """The store of the endpoint that `settings` configure, under `root` (made absolute): its model's name
        and the MLServer settings written with each version. The entrypoint prepares it, the follower in
        MLServer's process (services/serving/mlserver_start.py) opens it again."""
        return cls(
            root.resolve(),
            settings.model.name,
            server_settings=settings.server_settings,
            runtime_settings=settings.runtime_settings,
            model_settings=settings.model_settings,
        )

    def current_version(self) -> str | None:
        """The version `current` points at; None before the first one is activated."""
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def prepare(self, version: str, followed_ref: str) -> Path:
        """Download `version` unless it is already here, and write its MLServer model settings."""
        target = self.versions / version
        if not (target / "MLmodel").exists():
            staging = Path(tempfile.mkdtemp(prefix=f".download-{version}-", dir=self.versions))
            try:
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.model_name}/{version}", dst_path=str(staging)
                )
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        model_settings = {
            "name": self.model_name,
            "implementation": RUNTIME,
            "versions": [version],
            **self.model_settings,
            "parameters": {
                "extra": {
                    "registry_version": version,
                    "registry_uri": f"models:/{self.model_name}/{version}",
                    "followed_ref": followed_ref,
                    **self.runtime_settings,
                }
            },
        }
        (target / "model-settings.json").write_text(mlserver_file(ModelSettings, model_settings))
        # MLServer reads the server-wide settings.json from the folder it starts on (`current`), once.
        (target / "settings.json").write_text(mlserver_file(Settings, self.server_settings))
        return target

    def activate(self, version: str) -> None:
        """Point `current` at `version` atomically: a reader sees the old or the new link, never none."""
        link = self.root / f".current-{version}"
        link.unlink(missing_ok=True)
        link.symlink_to(Path("versions") / version)
        os.replace(link, self.current)

    def prune(self, keep: int = 3) -> None:
        """Remove old downloads, keeping the current version and the `keep` most recent others."""
        current = self.current_version()
        numbered = sorted((p for p in self.versions.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        for path in numbered[:-keep]:
            if path.name != current:
                shutil.rmtree(path, ignore_errors=True)
