from __future__ import annotations

from pathlib import Path

import pytest

from training.data import has_raw_files, resolve_root


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The MNIST root the tests read: MNIST_ROOT, data/mnist or the shared offline copy."""
    import os

    configured = os.environ.get("MNIST_ROOT")
    root = resolve_root(Path(configured) if configured else None)
    if not has_raw_files(root):
        pytest.fail(
            f"MNIST is not at {root}: set MNIST_ROOT to a torchvision root with MNIST/raw/*-ubyte "
            "(the tests need real MNIST images)"
        )
    return root
