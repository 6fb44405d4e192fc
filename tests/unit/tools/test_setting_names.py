"""Every variable is named after the library that reads it, or carries the project's prefix, SANDBOX_."""

from __future__ import annotations

import mlflow.cli
import mlflow.environment_variables
from mlserver.settings import ModelSettings, Settings

from tools import settings_docs

# Read by the postgres image, compose, and OpenMP (torch's thread pool), which this project only passes on.
OTHER_LIBRARIES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "COMPOSE_PROFILES", "OMP_NUM_THREADS"}


def read_by_mlflow() -> set[str]:
    names = {
        var.name for var in vars(mlflow.environment_variables).values() if isinstance(getattr(var, "name", None), str)
    }
    server = mlflow.cli.cli.commands["server"]
    envvars = (getattr(param, "envvar", None) for param in server.params)
    return names | {envvar for envvar in envvars if isinstance(envvar, str)}


def read_by_mlserver() -> set[str]:
    return {f"MLSERVER_{name.upper()}" for name in Settings.model_fields} | {
        f"MLSERVER_MODEL_{name.upper()}" for name in ModelSettings.model_fields
    }


def test_every_variable_is_a_libraries_own_or_starts_with_sandbox() -> None:
    mlflow_names, mlserver_names = read_by_mlflow(), read_by_mlserver()
    for section in settings_docs.SECTIONS:
        for var in settings_docs.variables(section.settings):
            if var.name.startswith("MLFLOW_"):
                assert var.name in mlflow_names, f"MLflow reads no {var.name}: call it SANDBOX_..."
            elif var.name.startswith("MLSERVER_"):
                assert var.name in mlserver_names, f"MLServer reads no {var.name}: call it SANDBOX_..."
            elif var.name.startswith("AWS_"):
                assert var.name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), var.name
            else:
                assert var.name.startswith("SANDBOX_") or var.name in OTHER_LIBRARIES, var.name
