from __future__ import annotations

from pathlib import Path

import pytest

from mlops_sandbox.mnist import has_raw_files
from mlops_sandbox.settings import MnistSettings


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The MNIST root the tests read: MNIST_ROOT, else data/mnist (.ci/run sets MNIST_ROOT)."""
    root = MnistSettings().mnist_root.resolve()
    if not has_raw_files(root):
        pytest.fail(
            f"MNIST is not at {root}: set MNIST_ROOT to a torchvision root with MNIST/raw/*-ubyte "
            "(the tests need real MNIST images)"
        )
    return root
