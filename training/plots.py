"""PNG figures logged with each run: learning curves and the test-set confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in containers or CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: dict[str, list[float]], path: Path) -> Path:
    epochs = range(1, len(history["train_loss"]) + 1)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        loss_ax.plot(epochs, history[f"{split}_loss"], marker="o", label=split)
        acc_ax.plot(epochs, history[f"{split}_accuracy"], marker="o", label=split)
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10) -> np.ndarray:
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def plot_confusion(matrix: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(matrix.shape[0])
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="Test-set confusion matrix")
    threshold = matrix.max() / 2
    for true in ticks:
        for pred in ticks:
            ax.text(
                pred,
                true,
                matrix[true, pred],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if matrix[true, pred] > threshold else "black",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
