"""Figures logged with each run (mlflow.log_figure): learning curves and the test-set confusion matrix."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in containers or CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def curves(history: dict[str, list[float]]) -> Figure:
    """Loss and accuracy per epoch, train beside validation (`history`: train_loss, val_loss, ... lists)."""
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
    plt.close(fig)  # log_figure draws it; pyplot need not keep it
    return fig


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10) -> np.ndarray:
    """int64 counts (classes, classes): row = true digit, column = predicted digit."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def confusion(matrix: np.ndarray) -> Figure:
    """The confusion matrix as a heat map, with each count written in its cell."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(matrix.shape[0])
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="Test-set confusion matrix")
    threshold = matrix.max() / 2
    for true in ticks:
        for pred in ticks:
            color = "white" if matrix[true, pred] > threshold else "black"
            ax.text(pred, true, matrix[true, pred], ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    plt.close(fig)
    return fig
