"""The training job's settings: defaults, the environment, and values it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from training.settings import TrainingSettings


def test_training_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_TRAIN_HIDDEN_SIZES", "256, 128,64")
    monkeypatch.setenv("SANDBOX_TRAIN_EPOCHS", "2")
    monkeypatch.setenv("SANDBOX_REGISTER_ALIAS", "Production")
    settings = TrainingSettings()
    assert settings.hidden_sizes == (256, 128, 64)
    assert settings.epochs == 2
    assert settings.register_alias == "production"
    assert settings.model.name == "pytorch_simplenn_mnist"


def test_training_takes_one_thread_unless_openmps_variable_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert TrainingSettings().threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert TrainingSettings().threads == 2


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SANDBOX_TRAIN_HIDDEN_SIZES", "512,abc", "comma-separated integers"),
        ("SANDBOX_TRAIN_HIDDEN_SIZES", "0", "hidden sizes"),
        ("SANDBOX_TRAIN_EPOCHS", "0", "greater than or equal to 1"),
        ("OMP_NUM_THREADS", "0", "greater than or equal to 1"),
        ("SANDBOX_TRAIN_LEARNING_RATE", "-1", "greater than 0"),
        ("SANDBOX_REGISTER_ALIAS", "canary", "staging, production"),
        ("SANDBOX_MODEL_NAME", "bad name!", "pattern"),
    ],
)
def test_training_rejects_bad_values(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message) as err:
        TrainingSettings()
    assert variable in str(err.value)


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_MNIST_ROOT", "")
    monkeypatch.setenv("SANDBOX_TRAIN_LIMIT", "")
    settings = TrainingSettings()
    assert settings.mnist.root == Path("data/mnist") and settings.train_limit is None
