"""What a training run logs besides its metrics: the data it saw, the figures, and the model itself."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from training import model as model_module
from training import plots
from training.data import MnistSplits
from training.model import IMAGE_SHAPE, NUM_CLASSES, SimpleNN, for_serving


def log_datasets(data: MnistSplits) -> None:
    """Record the splits as MLflow dataset inputs: digest, source and schema give the run its lineage."""
    source = str(data.raw_dir.resolve())
    for context, images, labels in (
        ("training", data.train_x, data.train_y),
        ("validation", data.val_x, data.val_y),
        ("test", data.test_x, data.test_y),
    ):
        with warnings.catch_warnings():
            # MLflow registers two interchangeable local-file source types and warns that it picked one.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            dataset = mlflow.data.from_numpy(  # type: ignore[attr-defined]
                images.numpy(), targets=labels.numpy(), source=source, name=f"mnist-{context}"
            )
        # Runs that log the same dataset at the same moment race in MLflow's store (it looks the dataset up,
        # then inserts it): the loser gets an integrity error and its transaction is rolled back. By then the
        # dataset exists, so logging again only links it to this run.
        for attempt in Retrying(
            stop=stop_after_attempt(5),
            wait=wait_random(0.1, 1.0),
            retry=retry_if_exception_type(MlflowException),
            reraise=True,
        ):
            with attempt:
                mlflow.log_input(dataset, context=context)


def _requirements() -> list[str]:
    # Pinned to what trained the model (without local build tags such as +cpu), so a serving
    # environment built from them matches; faster and more exact than MLflow's inference.
    import cloudpickle

    def public(version: str) -> str:
        return version.split("+", 1)[0]

    return [
        f"mlflow=={public(mlflow.__version__)}",
        f"torch=={public(torch.__version__)}",
        f"numpy=={public(np.__version__)}",
        f"cloudpickle=={public(cloudpickle.__version__)}",
    ]


def log_model(
    model: SimpleNN, example: torch.Tensor, serialization_format: Literal["pickle", "pt2"] = "pickle"
) -> mlflow.models.model.ModelInfo:
    """Log the network as served (softmax, eval mode) with its tensor signature, input example and pinned
    requirements, in MLflow's `serialization_format`:

    - pickle: `torch.save` of the module, with training/model.py shipped as code so that it loads where this
      project is not installed. Loading it runs whatever the pickle names (MLflow warns when it writes one).
    - pt2: a torch.export program (data/model.pt2): the traced graph of aten operators and the weights as raw
      tensor bytes; no pickled object and no code to ship. MLflow exports the batch dimension as an unbounded
      `torch.export.Dim` (the signature's -1), so it takes any batch size from 0 up.
    """
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *IMAGE_SHAPE))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, NUM_CLASSES))]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        code_paths = None
        if serialization_format == "pickle":
            # The pickled module refers to training.model.SimpleNN: ship exactly that module with the model
            # so that it loads anywhere, not only inside this project.
            package = Path(tmp) / "training"
            package.mkdir()
            (package / "__init__.py").write_text("")
            shutil.copy(model_module.__file__, package / "model.py")
            code_paths = [str(package)]
        return mlflow.pytorch.log_model(
            for_serving(model),
            name="model",
            signature=signature,
            # A batch of several images keeps the batch dimension dynamic in every MLflow version (torch.export
            # specialises a dimension of size 0 or 1 in its example).
            input_example=example.numpy(),
            code_paths=code_paths,
            serialization_format=serialization_format,
            pip_requirements=_requirements(),
        )


def log_figures(history: dict[str, list[float]], labels: np.ndarray, predicted: np.ndarray) -> None:
    """The learning curves and the test-set confusion matrix, as PNG artifacts under plots/."""
    mlflow.log_figure(plots.curves(history), "plots/curves.png")
    mlflow.log_figure(plots.confusion(plots.confusion_matrix(labels, predicted)), "plots/confusion_matrix.png")
