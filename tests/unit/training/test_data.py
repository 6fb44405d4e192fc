from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import datasets

from mlops_sandbox.mnist import MnistUnavailable
from mlops_sandbox.settings import MnistSettings
from training.data import load_mnist


def test_missing_files_without_download_name_the_variable_and_files(tmp_path: Path) -> None:
    with pytest.raises(MnistUnavailable) as err:
        load_mnist(tmp_path, download=False, val_size=100, seed=0)
    message = str(err.value)
    assert "SANDBOX_MNIST_ROOT" in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path) in message


def test_failed_download_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A mirror on a closed loopback port: the download fails the way it does on an offline machine.
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(MnistUnavailable, match="downloading failed.*SANDBOX_MNIST_ROOT"):
        load_mnist(tmp_path, download=True, val_size=100, seed=0)


def test_training_cli_exits_nonzero_with_one_clear_message(tmp_path: Path, monkeypatch, capsys) -> None:
    from training.train import main

    monkeypatch.setenv("SANDBOX_MNIST_ROOT", str(tmp_path / "nowhere"))
    monkeypatch.setenv("SANDBOX_MNIST_DOWNLOAD", "false")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST is not available") and "SANDBOX_MNIST_ROOT" in err


def test_the_root_is_mnist_root_or_data_mnist_and_never_a_folder_of_some_machine(monkeypatch) -> None:
    monkeypatch.delenv("SANDBOX_MNIST_ROOT", raising=False)
    assert MnistSettings().root == Path("data/mnist")
    monkeypatch.setenv("SANDBOX_MNIST_ROOT", "/srv/mnist")
    assert MnistSettings().root == Path("/srv/mnist")


def test_splits_follow_the_input_contract_and_the_seed(mnist_root: Path) -> None:
    data = load_mnist(mnist_root, download=False, val_size=5_000, seed=7)
    assert data.train_x.shape == (55_000, 1, 28, 28)
    assert data.val_x.shape == (5_000, 1, 28, 28)
    assert data.test_x.shape == (10_000, 1, 28, 28)
    assert data.train_x.dtype == torch.float32
    assert 0.0 <= float(data.train_x.min()) and float(data.train_x.max()) <= 1.0
    again = load_mnist(mnist_root, download=False, val_size=5_000, seed=7)
    assert torch.equal(data.val_y, again.val_y)
    other = load_mnist(mnist_root, download=False, val_size=5_000, seed=8)
    assert not torch.equal(data.val_y, other.val_y)


def test_train_limit_and_bad_val_size(mnist_root: Path) -> None:
    assert len(load_mnist(mnist_root, download=False, val_size=100, seed=0, train_limit=500).train_x) == 500
    with pytest.raises(ValueError, match="SANDBOX_TRAIN_VAL_SIZE"):
        load_mnist(mnist_root, download=False, val_size=60_000, seed=0)
