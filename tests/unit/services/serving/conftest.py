"""Fixtures the serving unit tests share: a saved MLflow PyTorch model (the shipped architecture, untrained), and
MLServer's data plane serving it with the sandbox's runtime and patches, in this process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from mlserver.handlers import DataPlane, ModelRepositoryHandlers
from mlserver.registry import MultiModelRegistry
from mlserver.repository import SchemalessModelRepository
from mlserver.settings import ModelParameters, ModelSettings, Settings

from services.serving import patches
from services.serving.runtime import RegistryModelRuntime
from training.model import build_model, for_serving

SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
)
"""The signature the training job logs: float32 (N, 1, 28, 28) in, float32 (N, 10) out."""


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.pytorch.save_model(
        for_serving(build_model((64,), 0.1, seed=1)), str(path), signature=SIGNATURE, pip_requirements=[]
    )
    return path


@dataclass(frozen=True)
class Plane:
    """MLServer's settings, data plane and repository handlers, serving model `digits` (registry version 7)."""

    settings: Settings
    data_plane: DataPlane
    handlers: ModelRepositoryHandlers


@pytest.fixture(scope="session")
def plane(saved_model: Path) -> Plane:
    """MLServer's data plane, built as `mlserver start` builds it once the patches are installed, serving the
    runtime. Built once: MLServer's data plane registers its Prometheus metrics globally."""

    async def build() -> Plane:
        patches.install()
        settings = Settings(metrics_endpoint=None)
        registry = MultiModelRegistry()
        await registry.load(
            ModelSettings(
                name="digits",
                implementation=RegistryModelRuntime,
                parameters=ModelParameters(uri=str(saved_model), extra={"registry_version": "7"}),
            )
        )
        handlers = ModelRepositoryHandlers(
            repository=SchemalessModelRepository(str(saved_model)), model_registry=registry
        )
        return Plane(settings, DataPlane(settings, registry), handlers)

    return asyncio.run(build())


@pytest.fixture()
def direct_calls(plane: Plane, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shapes of the requests the loaded model's direct path answered (through the gRPC or REST shortcut),
    one by one (its real answers go on)."""
    model = asyncio.run(plane.data_plane._model_registry.get_model("digits"))
    assert isinstance(model, RegistryModelRuntime)
    calls: list[tuple[int, ...]] = []
    original = model.predict_arrays

    def counted(batches: list[np.ndarray], labels: list[str | None]) -> list[np.ndarray]:
        calls.extend(images.shape for images in batches)
        return original(batches, labels)

    monkeypatch.setattr(model, "predict_arrays", counted)
    return calls
