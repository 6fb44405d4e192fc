"""SimpleNN: a small feed-forward network for MNIST digits.

Input contract: float32 pixels in [0, 1], shape (N, 1, 28, 28), any N. The network normalises its own
input (MNIST mean and std are buffers saved with the weights), so no client needs preprocessing code.
The training module outputs logits; `for_serving` adds a softmax so that served and loaded models answer
with class probabilities.
"""

from __future__ import annotations

import torch
from torch import nn

# Mean and standard deviation of MNIST training pixels in [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


class SimpleNN(nn.Module):
    """784 -> hidden_sizes (ReLU, dropout) -> 10 logits; normalises its own input with MNIST's mean and std."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, hidden_sizes: tuple[int, ...] = (512, 256), dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MNIST_MEAN))
        self.register_buffer("std", torch.tensor(MNIST_STD))
        layers: list[nn.Module] = [nn.Flatten()]
        width = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, NUM_CLASSES))
        self.layers = nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits, float32 (N, 10), for pixels float32 (N, 1, 28, 28) in [0, 1]."""
        return self.layers((pixels - self.mean) / self.std)


def build_model(hidden_sizes: tuple[int, ...], dropout: float, seed: int) -> SimpleNN:
    """A freshly initialised network; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return SimpleNN(hidden_sizes, dropout)


def for_serving(model: SimpleNN) -> nn.Module:
    """The network as it is logged: in eval mode, answering class probabilities."""
    return nn.Sequential(model, nn.Softmax(dim=1)).eval()


INPUT_CONTRACT = (
    "Input: float32 pixels in [0, 1], shape (N, 1, 28, 28), any batch size N; the model normalises "
    "internally, so send raw pixels divided by 255. Output: float32 class probabilities, shape (N, 10); "
    "the predicted digit is the argmax."
)
