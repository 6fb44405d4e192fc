"""The training job: train SimpleNN on MNIST, log it to MLflow, register a new version and alias it.

    python -m training.train [--epochs 3] [--alias staging] [--output-json result.json]

Settings come from the environment (see training/settings.py and .env.example); flags override them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import requests
import torch
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from mlops_sandbox import registry
from mlops_sandbox.mnist import MnistUnavailable
from mlops_sandbox.references import model_uri
from mlops_sandbox.settings import ModelReference, command_name
from mlops_sandbox.tracking import connect, diagnose
from mlops_sandbox.waiting import DependencyUnavailable, on_stderr
from training.data import load_mnist
from training.fit import evaluate, fit
from training.log import log_datasets, log_figures, log_model
from training.model import build_model
from training.register import git_commit, register
from training.settings import TrainingSettings


@dataclass(frozen=True)
class TrainingResult:
    """What one run produced: its run, the registered version and its URI, and the test accuracy (0-1)."""

    run_id: str
    experiment_id: str
    model_name: str
    version: str
    model_uri: str
    alias: str
    test_accuracy: float


def run(settings: TrainingSettings) -> TrainingResult:
    """Train, log and register one version, and give it `settings.register_alias` (if any).

    Raises MnistUnavailable before anything is written when MNIST cannot be read, DependencyUnavailable
    when the tracking server does not answer at the start, TrackingServerFailed (a DependencyUnavailable) when
    it, or a store behind it, stops answering later, RegistryError when the alias cannot be set. A run that
    fails is ended FAILED when the server still answers.
    """
    torch.set_num_threads(settings.threads)
    # Data first: a missing data set fails before anything is written to the tracking store.
    data = load_mnist(
        settings.mnist.root,
        download=settings.mnist.download,
        val_size=settings.val_size,
        seed=settings.seed,
        train_limit=settings.train_limit,
    )
    # The notice: a person who ran `sandbox train` sees at once what it waits for; a job's log shows it too.
    client = connect(settings.tracking, notice=on_stderr)
    tracking_uri = settings.tracking.tracking_uri
    with step(tracking_uri, "creating the run"):
        experiment = mlflow.set_experiment(settings.experiment_name)
        model = build_model(settings.hidden_sizes, settings.dropout, settings.seed)
        mlflow.set_system_metrics_sampling_interval(settings.system_metrics_interval)
        active = mlflow.start_run(log_system_metrics=settings.system_metrics)
    try:
        with step(tracking_uri, f"logging run {active.info.run_id}"):
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
                    "threads": settings.threads,
                    "parameters": sum(p.numel() for p in model.parameters()),
                }
            )
            log_datasets(data)
            history = fit(model, data, settings)
            test_loss, test_accuracy, predicted = evaluate(model, data.test_x, data.test_y)
            mlflow.log_metrics({"test_loss": test_loss, "test_accuracy": test_accuracy})
            print(f"test accuracy {test_accuracy:.4f} on {len(data.test_x)} images", flush=True)
            log_figures(history, data.test_y.numpy(), predicted)
            info = log_model(model, data.test_x[:4], settings.serialization_format)
        with step(tracking_uri, f"registering run {active.info.run_id}'s model as a version of {settings.model.name}"):
            version = register(client, settings, info, test_accuracy)
    except BaseException:
        end_failed_run(tracking_uri)
        raise
    with step(tracking_uri, f"ending run {active.info.run_id}"):
        mlflow.end_run()
    if settings.register_alias:
        with step(tracking_uri, f"moving @{settings.register_alias} to version {version}"):
            print(registry.promote(client, settings.model.name, version, settings.register_alias).describe())
    uri = model_uri(settings.model.name, version)
    print(
        f"registered {uri}"
        + (f" ({model_uri(settings.model.name, '@' + settings.register_alias)})" if settings.register_alias else ""),
        flush=True,
    )
    return TrainingResult(
        run_id=active.info.run_id,
        experiment_id=experiment.experiment_id,
        model_name=settings.model.name,
        version=version,
        model_uri=uri,
        alias=settings.register_alias,
        test_accuracy=test_accuracy,
    )


@contextmanager
def step(tracking_uri: str, doing: str) -> Iterator[None]:
    """Turn a request that failed after MLflow's retries into TrackingServerFailed, one line that says what
    could not be reached while `doing` what (mlops_sandbox.tracking.diagnose)."""
    try:
        yield
    except (MlflowException, requests.RequestException) as err:
        raise diagnose(tracking_uri, doing, err) from err


def end_failed_run(tracking_uri: str) -> None:
    """Mark the active run FAILED when the tracking server still answers. When it does not, only forget the
    run here (it stays RUNNING on the server): ending it would retry for as long as the request that failed,
    and so would MLflow's own end of the run at exit."""
    if mlflow.active_run() is None:
        return
    try:
        requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=5).raise_for_status()
        reachable = True
    except requests.RequestException:
        reachable = False
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    if not reachable:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        with suppress(MlflowException, requests.RequestException):
            mlflow.end_run("FAILED")
    finally:
        if retries is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = retries


def setting_help(name: str) -> str:
    """A flag's help: the first sentence of the TrainingSettings field it overrides (docs/settings.md has the
    rest), its default and its variable."""
    field = TrainingSettings.model_fields[name]
    default = ",".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
    first = " ".join((field.description or "").split()).split(". ")[0].removesuffix(".")
    shown = "unset" if default is None else default
    return f"{first}. Default: {shown}, or {field.validation_alias}.".replace("%", "%%")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=command_name("training.train"), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    flags = {
        "--epochs": int,
        "--batch-size": int,
        "--learning-rate": float,
        "--hidden-sizes": str,
        "--dropout": float,
        "--seed": int,
        "--train-limit": int,
        "--max-steps": int,
        "--log-every-steps": int,
        "--threads": int,
    }
    for flag, type_ in flags.items():
        parser.add_argument(flag, type=type_, help=setting_help(flag.removeprefix("--").replace("-", "_")))
    parser.add_argument("--alias", dest="register_alias", help=setting_help("register_alias"))
    parser.add_argument("--serialization-format", choices=("pickle", "pt2"), help=setting_help("serialization_format"))
    parser.add_argument(
        "--model-name", help="the registered model (default SANDBOX_MODEL_NAME, else pytorch_simplenn_mnist)"
    )
    parser.add_argument("--output-json", type=Path, help="write the result (version, URI, accuracy) here")
    return parser.parse_args(argv)


class MonitorLostServer(logging.Filter):
    """Drops the system-metrics monitor's warnings that it cannot reach the run: they come from the same lost
    server as the job's own error line, in a thread that retries at the same time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Failed to get mlflow run", "Failed to log system metrics"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("mlflow.system_metrics.system_metrics_monitor").addFilter(MonitorLostServer())
    overrides = {k: v for k, v in vars(args).items() if v is not None and k not in ("output_json", "model_name")}
    try:
        if args.model_name:
            overrides["model"] = ModelReference(name=args.model_name)
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
