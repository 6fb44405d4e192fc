"""Settings of the training job, read from the environment, overridable by the job's flags.

`MLFLOW_EXPERIMENT_NAME` is MLflow's own variable; the rest are the project's (SANDBOX_TRAIN_*). The tracking
connection, the model's name and MNIST's location are the shared classes of mlops_sandbox.settings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from mlops_sandbox.references import LIFECYCLE_ALIASES
from mlops_sandbox.settings import (
    MnistSettings,
    ModelReference,
    SandboxSettings,
    TrackingClientSettings,
    composed,
)


class TrainingSettings(SandboxSettings):
    """The training job: what it trains, and where it logs and registers the result."""

    tracking: TrackingClientSettings = composed(TrackingClientSettings, "SANDBOX_TRAINING_TRACKING")
    model: ModelReference = composed(ModelReference, "SANDBOX_TRAINING_MODEL")
    """The registered model a new version is added to (its name; the reference is not used here)."""
    mnist: MnistSettings = composed(MnistSettings, "SANDBOX_TRAINING_MNIST")
    experiment_name: str = Field("mnist-simplenn", min_length=1, validation_alias="MLFLOW_EXPERIMENT_NAME")
    """The MLflow experiment that training runs are logged to."""
    system_metrics: bool = Field(True, validation_alias="MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING")
    """Log the machine's CPU, memory and disk use with the run (MLflow's system metrics), so that the run page
    shows what training cost."""
    system_metrics_interval: float = Field(
        1.0, gt=0, le=600, validation_alias="MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
    )
    """Seconds between two samples of the system metrics. MLflow's default of 10 s would give a 15 s training
    run one or two points."""
    register_alias: str = Field("staging", validation_alias="SANDBOX_REGISTER_ALIAS")
    """Alias (and matching stage) given to each new version: staging, production, or none."""

    epochs: int = Field(3, ge=1, le=100, validation_alias="SANDBOX_TRAIN_EPOCHS")
    """Passes over the training images."""
    batch_size: int = Field(64, ge=1, le=60_000, validation_alias="SANDBOX_TRAIN_BATCH_SIZE")
    """Images per optimiser step."""
    learning_rate: float = Field(1e-3, gt=0, le=10, validation_alias="SANDBOX_TRAIN_LEARNING_RATE")
    """Adam's learning rate, decayed to 0 on a cosine schedule."""
    # NoDecode: the environment gives "512,256", not JSON.
    hidden_sizes: Annotated[tuple[int, ...], NoDecode] = Field(
        (512, 256), validation_alias="SANDBOX_TRAIN_HIDDEN_SIZES"
    )
    """Widths of the hidden layers; in the environment a comma-separated list such as 512,256."""
    dropout: float = Field(0.1, ge=0, lt=1, validation_alias="SANDBOX_TRAIN_DROPOUT")
    """Dropout after each hidden layer."""
    seed: int = Field(42, ge=0, validation_alias="SANDBOX_TRAIN_SEED")
    """Seeds the split, the initial weights and the shuffling: the same seed gives the same metrics."""
    val_size: int = Field(5_000, ge=1, validation_alias="SANDBOX_TRAIN_VAL_SIZE")
    """Images held out from the 60k training set for validation."""
    train_limit: int | None = Field(None, ge=1, validation_alias="SANDBOX_TRAIN_LIMIT")
    """Train on only this many images: for quick runs and tests."""
    max_steps: int | None = Field(None, ge=1, validation_alias="SANDBOX_TRAIN_MAX_STEPS")
    """Stop after this many optimiser steps: a deliberately weak candidate for rehearsals."""
    threads: int = Field(1, ge=1, le=256, validation_alias="OMP_NUM_THREADS")
    """Threads of torch's intra-op parallelism while training (`torch.set_num_threads`), read from OpenMP's own
    variable, which torch follows. One by default, not torch's one per core: this network's operations on a
    batch of 64 are too small to gain from a second thread, and threads that wait for each other lose much
    when another program holds a core, as the sandbox's servers or an image build do. Measured on 2 cores,
    2026-12-02, one epoch: idle, 2 threads 18.7 and 20.0 s against 1 thread 20.4 and 18.4 s; beside a busy loop
    (20,000 images), 40.9 s against 25.2 s; beside the compose smoke test, 37.3 s against 19.0 s."""
    log_every_steps: int | None = Field(None, ge=1, validation_alias="SANDBOX_TRAIN_LOG_EVERY_STEPS")
    """Also log the batch loss every this many optimiser steps (metric batch_loss); unset: per epoch only."""
    serialization_format: Literal["pickle", "pt2"] = Field(
        "pickle", validation_alias="SANDBOX_TRAIN_SERIALIZATION_FORMAT"
    )
    """How the model's files are written (MLflow's `serialization_format`). pickle: `torch.save` of the module,
    which can execute any code when it is loaded. pt2: a torch.export program (graph and raw weights), loadable
    with `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`; served more slowly (10 % more server CPU per single-image REST
    request, measured side by side: docs/performance.md), which is why it is not the default."""

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
