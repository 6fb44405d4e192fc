"""Settings of the training job, read from the environment (and `.env`), overridable by CLI flags.

Variable names follow the libraries that already read them (`MLFLOW_TRACKING_URI`,
`MLFLOW_EXPERIMENT_NAME`); the rest are this project's own, documented in `.env.example`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from mlops_sandbox.registry import LIFECYCLE_ALIASES
from mlops_sandbox.settings import MnistSettings


class TrainingSettings(MnistSettings):
    experiment_name: str = Field("mnist-simplenn", min_length=1, validation_alias="MLFLOW_EXPERIMENT_NAME")
    register_alias: str = Field("staging", validation_alias="REGISTER_ALIAS")
    """Alias (and matching stage) given to the new version: staging, production, or none."""

    epochs: int = Field(3, ge=1, le=100, validation_alias="TRAIN_EPOCHS")
    batch_size: int = Field(64, ge=1, le=60_000, validation_alias="TRAIN_BATCH_SIZE")
    learning_rate: float = Field(1e-3, gt=0, le=10, validation_alias="TRAIN_LEARNING_RATE")
    # NoDecode: the environment gives "512,256", not JSON.
    hidden_sizes: Annotated[tuple[int, ...], NoDecode] = Field((512, 256), validation_alias="TRAIN_HIDDEN_SIZES")
    """Widths of the hidden layers; in the environment a comma-separated list such as 512,256."""
    dropout: float = Field(0.1, ge=0, lt=1, validation_alias="TRAIN_DROPOUT")
    seed: int = Field(42, ge=0, validation_alias="TRAIN_SEED")
    val_size: int = Field(5_000, ge=1, validation_alias="TRAIN_VAL_SIZE")
    """Images held out from the 60k training set for validation."""
    train_limit: int | None = Field(None, ge=1, validation_alias="TRAIN_LIMIT")
    """Train on only this many images: for quick runs and tests."""
    max_steps: int | None = Field(None, ge=1, validation_alias="TRAIN_MAX_STEPS")
    """Stop after this many optimiser steps: a deliberately weak candidate for rehearsals."""
    log_every_steps: int | None = Field(None, ge=1, validation_alias="TRAIN_LOG_EVERY_STEPS")
    """Also log the batch loss every this many optimiser steps (metric batch_loss); unset: per epoch only."""

    @field_validator("hidden_sizes", mode="before")
    @classmethod
    def _parse_sizes(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = tuple(int(part) for part in value.replace(" ", "").split(",") if part)
            except ValueError:
                raise ValueError(f"expected comma-separated integers such as 512,256, got {value!r}") from None
        return value

    @field_validator("hidden_sizes")
    @classmethod
    def _check_sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(size < 1 or size > 8192 for size in value):
            raise ValueError("hidden sizes must be 1 to 8192 units each, at least one layer")
        return value

    @field_validator("register_alias")
    @classmethod
    def _check_alias(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("", "none"):
            return ""
        if value not in LIFECYCLE_ALIASES:
            raise ValueError(f"must be one of {', '.join(LIFECYCLE_ALIASES)} or none, got {value!r}")
        return value
