"""The training job's data: a seeded train/validation split of MNIST's 60k training images, and the 10k test images.

Reading the files is the shared core's (mlops_sandbox.mnist); this module only splits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mlops_sandbox.mnist import read_split, to_inputs


@dataclass(frozen=True)
class MnistSplits:
    """Images float32 (N, 1, 28, 28) in [0, 1] and labels int64 (N,) of each split, and the root they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    root: Path

    @property
    def raw_dir(self) -> Path:
        return self.root / "MNIST" / "raw"


def load_mnist(root: Path, *, download: bool, val_size: int, seed: int, train_limit: int | None = None) -> MnistSplits:
    """Training images minus `val_size` held out at random (seeded), the held-out images, and the 10k test images.

    Every image tensor is float32 (N, 1, 28, 28) in [0, 1], every label tensor int64 (N,). Raises
    MnistUnavailable when the files cannot be read, ValueError for a `val_size` outside 1..59,999.
    """
    train = read_split(root, train=True, download=download)
    test = read_split(root, train=False, download=download)
    if not 0 < val_size < len(train):
        raise ValueError(f"SANDBOX_TRAIN_VAL_SIZE must be between 1 and {len(train) - 1}, got {val_size}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_limit is not None:
        train_idx = train_idx[:train_limit]
    images, labels = to_inputs(train.data), train.targets
    return MnistSplits(
        train_x=images[train_idx],
        train_y=labels[train_idx],
        val_x=images[val_idx],
        val_y=labels[val_idx],
        test_x=to_inputs(test.data),
        test_y=test.targets.clone(),
        root=root,
    )
