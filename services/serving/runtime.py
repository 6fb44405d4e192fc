"""The MLServer runtime that serves registered models: MLServer's MLflow runtime, plus the registry version.

The version is carried in the model settings (`parameters.extra.registry_version`), not in MLServer's own
version field: MLServer treats a new version as a second model and keeps the highest number as default,
which would make rollbacks impossible; an unversioned model is reloaded in place instead (the new copy is
loaded before the old one is released). This runtime puts the registry version back where users look:
in every V2 response's `model_version` and in a Prometheus counter label.
"""

from __future__ import annotations

from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_mlflow import MLflowRuntime

from services.serving.metrics import SERVED_REQUESTS


class RegistryModelRuntime(MLflowRuntime):
    @property
    def registry_version(self) -> str | None:
        extra = self.settings.parameters.extra if self.settings.parameters else None
        version = (extra or {}).get("registry_version")
        return str(version) if version is not None else None

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        response = await super().predict(payload)
        response.model_version = self.registry_version
        SERVED_REQUESTS.labels(self.name, self.registry_version or "").inc()
        return response
