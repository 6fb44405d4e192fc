"""MNIST as tensors: a seeded train/validation split of the 60k training images, and the 10k test images.

Pixels are float32 in [0, 1] with shape (N, 1, 28, 28): exactly the model's input contract, so nothing
here normalises (the model does that itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEFAULT_ROOT = Path("data/mnist")
# An offline copy that sits beside a checkout on the project's CI machines and workplace; it is
# only looked at when MNIST_ROOT is unset and data/mnist holds nothing.
SHARED_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"


class MnistUnavailable(RuntimeError):
    """MNIST is neither on disk nor downloadable; the message says what to do."""


@dataclass(frozen=True)
class MnistSplits:
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


def has_raw_files(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in RAW_FILES)


def resolve_root(configured: Path | None) -> Path:
    """The root to read: MNIST_ROOT when set, else data/mnist, else the shared offline copy if present."""
    if configured is not None:
        return configured
    if not has_raw_files(DEFAULT_ROOT) and has_raw_files(SHARED_ROOT):
        return SHARED_ROOT
    return DEFAULT_ROOT


def _missing_message(root: Path, reason: str) -> str:
    raw = root / "MNIST" / "raw"
    return (
        f"MNIST is not available: {reason}. Set MNIST_ROOT to a torchvision root that holds "
        f"MNIST/raw/{{{','.join(RAW_FILES)}}} (currently MNIST_ROOT={root}, looked in {raw}), "
        "or run once with internet access so that torchvision can download it there."
    )


def _load_split(root: Path, *, train: bool, download: bool) -> datasets.MNIST:
    if not has_raw_files(root) and not download:
        raise MnistUnavailable(_missing_message(root, "the files are missing and MNIST_DOWNLOAD is off"))
    try:
        return datasets.MNIST(str(root), train=train, download=download)
    except (RuntimeError, OSError) as err:
        raise MnistUnavailable(_missing_message(root, f"downloading failed ({' '.join(str(err).split())})")) from err


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) images as the model's input: float32 (N, 1, 28, 28) in [0, 1]."""
    return images.unsqueeze(1).to(torch.float32).div_(255.0)


def load_mnist(root: Path, *, download: bool, val_size: int, seed: int, train_limit: int | None = None) -> MnistSplits:
    train = _load_split(root, train=True, download=download)
    test = _load_split(root, train=False, download=download)
    if not 0 < val_size < len(train):
        raise ValueError(f"TRAIN_VAL_SIZE must be between 1 and {len(train) - 1}, got {val_size}")
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


def load_test_set(root: Path, *, download: bool, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10k test images (or the first `limit`) and their labels."""
    test = _load_split(root, train=False, download=download)
    images, labels = to_inputs(test.data), test.targets
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels
