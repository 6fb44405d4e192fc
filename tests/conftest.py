from __future__ import annotations

from pathlib import Path

import pytest

from mlops_sandbox.mnist import has_raw_files
from mlops_sandbox.settings import MnistSettings


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The MNIST root the tests read: SANDBOX_MNIST_ROOT, else data/mnist (.ci/run sets SANDBOX_MNIST_ROOT)."""
    root = MnistSettings().root.resolve()
    if not has_raw_files(root):
        pytest.fail(
            f"MNIST is not at {root}: set SANDBOX_MNIST_ROOT to a torchvision root with MNIST/raw/*-ubyte "
            "(the tests need real MNIST images)"
        )
    return root
