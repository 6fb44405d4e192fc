"""Registering a logged model as a new version, with the description, tags and lineage a reader looks for."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow

from training.model import INPUT_CONTRACT
from training.settings import TrainingSettings


def git_commit() -> str | None:
    """The commit of the checkout the job runs from; None outside a git checkout (an image, a wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def register(
    client: mlflow.MlflowClient, settings: TrainingSettings, info: mlflow.models.model.ModelInfo, accuracy: float
) -> str:
    """Register the logged model as a new version of the model; returns its number. The version is tagged with
    its test accuracy (0-1), its hidden sizes and the git commit, and described with the input contract."""
    commit = git_commit()
    tags = {"test_accuracy": f"{accuracy:.4f}", "hidden_sizes": ",".join(map(str, settings.hidden_sizes))}
    if commit:
        tags["git_commit"] = commit
    version = mlflow.register_model(info.model_uri, settings.model.name, tags=tags)
    client.update_registered_model(
        settings.model.name, description=f"SimpleNN MNIST digit classifier. {INPUT_CONTRACT}"
    )
    client.update_model_version(
        settings.model.name,
        version.version,
        description=(
            f"SimpleNN {'-'.join(map(str, settings.hidden_sizes))}, {settings.epochs} epochs, "
            f"test accuracy {accuracy:.2%} on the 10k MNIST test images. {INPUT_CONTRACT}"
        ),
    )
    return str(version.version)
