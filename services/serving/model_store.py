"""The served model on local disk: registered versions downloaded once, and a `current` link to one of them.

    <root>/versions/<N>/           a registered version, as `mlflow artifacts download` gives it, plus the
                                   model-settings.json that tells MLServer its name and registry version,
                                   and the server's settings.json (performance settings)
    <root>/current -> versions/N   what the server is pointed at; switched atomically

`mlflow models serve -m <root>/current --enable-mlserver` hands that path straight to `mlserver start`,
so repointing the link and asking MLServer to reload the model switches versions without a restart.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import mlflow

RUNTIME = "services.serving.runtime.RegistryModelRuntime"


class ModelStore:
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

    def current_version(self) -> str | None:
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
        settings = {
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
        (target / "model-settings.json").write_text(json.dumps(settings, indent=2))
        # MLServer reads the server-wide settings.json from the folder it starts on (`current`), once.
        (target / "settings.json").write_text(json.dumps(self.server_settings, indent=2))
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
