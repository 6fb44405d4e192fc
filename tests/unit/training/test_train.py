"""The training job against a temporary SQLite store: what it logs, registers, and that seeds repeat."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from mlops_sandbox.settings import TrackingClientSettings
from training.settings import TrainingSettings
from training.train import TrainingResult, parse_args, run

# A short run: system metrics are sampled every 0.2 s so that even this one gets some.
QUICK: dict[str, Any] = {
    "train_limit": 3_000,
    "epochs": 2,
    "hidden_sizes": (64,),
    "val_size": 1_000,
    "system_metrics_interval": 0.2,
}


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_root: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SANDBOX_MNIST_ROOT", str(mnist_root))
    monkeypatch.chdir(tmp_path)  # the default artifact root (./mlruns) lands in the temp folder
    return uri


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    """The job sets torch's threads for its process (TrainingSettings.threads): this one's are restored after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train(uri: str, **overrides: Any) -> TrainingResult:
    return run(TrainingSettings(tracking=TrackingClientSettings(tracking_uri=uri), **{**QUICK, **overrides}))


def test_a_run_logs_everything_and_registers_a_version(store: str) -> None:
    result = train(store)
    client = MlflowClient(store)
    run = client.get_run(result.run_id)
    assert run.data.params["hidden_sizes"] == "64" and run.data.params["epochs"] == "2"
    # The run records the threads it trained with, which the job set in torch.
    assert run.data.params["threads"] == str(torch.get_num_threads())
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(result.test_accuracy)
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training", "validation", "test"}
    assert all(i.dataset.digest for i in run.inputs.dataset_inputs)
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {"plots/curves.png", "plots/confusion_matrix.png"}
    # MLflow's system metrics, sampled while the run lasts.
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)

    version = client.get_model_version("pytorch_simplenn_mnist", result.version)
    assert version.run_id == result.run_id
    assert "float32 pixels in [0, 1]" in (version.description or "")
    assert "(N, 1, 28, 28)" in client.get_registered_model("pytorch_simplenn_mnist").description
    assert str(client.get_model_version_by_alias("pytorch_simplenn_mnist", "staging").version) == result.version
    assert result.model_uri == f"models:/pytorch_simplenn_mnist/{result.version}"


def test_the_logged_model_takes_raw_pixels_for_any_batch(store: str, mnist_root: Path) -> None:
    from mlops_sandbox.mnist import load_test_set

    result = train(store)
    mlflow.set_tracking_uri(store)
    images, labels = load_test_set(mnist_root, download=False, limit=500)
    pyfunc = mlflow.pyfunc.load_model(result.model_uri)
    for batch in (1, 3, 500):
        out = pyfunc.predict(images[:batch].numpy())
        assert out.shape == (batch, 10)
    accuracy = float((np.asarray(pyfunc.predict(images.numpy())).argmax(1) == labels.numpy()).mean())
    assert accuracy > 0.8
    loaded = mlflow.pytorch.load_model(result.model_uri)
    assert torch.allclose(loaded(images[:4]).sum(1), torch.ones(4), atol=1e-5)


def test_as_pt2_the_model_files_load_without_unpickling_any_object(
    store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = train(store, serialization_format="pt2")
    # MLflow warns, when it pickles a PyTorch model, that loading it can execute arbitrary code.
    assert "arbitrary code" not in capsys.readouterr().err
    mlflow.set_tracking_uri(store)
    local = Path(mlflow.artifacts.download_artifacts(result.model_uri))
    assert (local / "data" / "model.pt2").is_file()
    assert not (local / "data" / "model.pth").exists()

    # MLflow's own switch refuses pickled models; Python's unpickler, which runs whatever a pickle names, is
    # taken away too (torch.load(weights_only=True) reads plain tensors with a restricted unpickler of its own).
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model's files were unpickled with Python's unrestricted unpickler")

    for name in ("Unpickler", "load", "loads"):
        monkeypatch.setattr(pickle, name, refused)
    images = torch.rand(3, 1, 28, 28)
    for batch in (1, 3):
        assert mlflow.pytorch.load_model(result.model_uri)(images[:batch]).shape == (batch, 10)
        assert mlflow.pyfunc.load_model(result.model_uri).predict(images[:batch].numpy()).shape == (batch, 10)


def test_same_seed_same_metrics(store: str) -> None:
    first, second = train(store, seed=5), train(store, seed=5)
    client = MlflowClient(store)
    for key in ("train_loss", "val_accuracy", "test_accuracy"):
        a = [m.value for m in client.get_metric_history(first.run_id, key)]
        b = [m.value for m in client.get_metric_history(second.run_id, key)]
        assert a == b
    assert (first.version, second.version) == ("1", "2")


def test_each_flag_says_its_default_and_the_variable_it_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "Seeds the split" in usage and "Default: 42, or SANDBOX_TRAIN_SEED." in usage
    assert "Default: 512,256, or SANDBOX_TRAIN_HIDDEN_SIZES." in usage
    assert "Default: unset, or SANDBOX_TRAIN_MAX_STEPS." in usage
    assert parse_args(["--seed", "7", "--hidden-sizes", "64"]).seed == 7
