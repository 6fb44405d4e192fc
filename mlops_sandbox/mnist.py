"""MNIST as the model takes it, read from a torchvision root by torchvision itself.

Images are float32 pixels in [0, 1], shape (N, 1, 28, 28), and labels are int64 digits, shape (N,):
exactly the registered model's input contract, so nothing here normalises (the model does that itself).
The training job, predict, the promotion gate and the rehearsal all read the same files through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torchvision import datasets

# torch and torchvision are imported where they are used, not here: the registry CLI, predict and the training
# job import this module for MnistUnavailable and has_raw_files too, and the two cost about 4 s of CPU to
# import (`python -m infra.ops.registry --help` took 8.6 s with them, 2026-12-03), in every `sandbox list`.

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TEST_IMAGES = 10_000
"""Size of MNIST's test split (LeCun et al.): the most images predict and the gate can measure on."""


class MnistUnavailable(RuntimeError):
    """MNIST is neither on disk nor downloadable; the message names the variable and the files to provide."""


def has_raw_files(root: Path) -> bool:
    """Whether `root` is a torchvision root holding the four IDX files (plain or gzipped) in MNIST/raw."""
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in RAW_FILES)


def _missing_message(root: Path, reason: str) -> str:
    raw = root / "MNIST" / "raw"
    return (
        f"MNIST is not available: {reason}. Set SANDBOX_MNIST_ROOT to a torchvision root that holds "
        f"MNIST/raw/{{{','.join(RAW_FILES)}}} (currently SANDBOX_MNIST_ROOT={root}, looked in {raw.resolve()}), "
        "or run once with internet access so that torchvision can download it there."
    )


def read_split(root: Path, *, train: bool, download: bool) -> datasets.MNIST:
    """torchvision's MNIST training (60,000) or test (10,000) split under `root`.

    Raises MnistUnavailable when the files are missing and `download` is off, or when downloading fails.
    """
    if not has_raw_files(root) and not download:
        raise MnistUnavailable(_missing_message(root, "the files are missing and SANDBOX_MNIST_DOWNLOAD is off"))
    from torchvision import datasets

    try:
        return datasets.MNIST(str(root), train=train, download=download)
    except (RuntimeError, OSError) as err:
        raise MnistUnavailable(_missing_message(root, f"downloading failed ({' '.join(str(err).split())})")) from err


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) as the model's input: float32 (N, 1, 28, 28) in [0, 1]."""
    import torch

    return images.unsqueeze(1).to(torch.float32).div_(255.0)


def load_test_set(root: Path, *, download: bool, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` (default: all 10,000) test images, float32 (N, 1, 28, 28), and their int64 labels (N,).

    Raises MnistUnavailable as `read_split` does.
    """
    test = read_split(root, train=False, download=download)
    images, labels = to_inputs(test.data), test.targets
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels
