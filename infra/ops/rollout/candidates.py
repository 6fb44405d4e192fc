"""Candidate versions for the rollout rehearsals, each made the way such a version happens in real life.

- good:   a new training run with the project's defaults.
- worse:  a training run stopped after a handful of optimiser steps: it serves, answers, and is wrong more often.
- slower: a genuinely larger network (six hidden layers of 4,096: 87 M parameters, 33 ms per image on
          one core against 0.3 ms), not an artificial sleep.
- schema: production's own model behind a flattening exporter's front (flat (-1, 784) input, unflattened to
          (N, 1, 28, 28) before production's module), logged with that flat signature. Clients that send
          (N, 1, 28, 28) are refused.

The trained kinds are logged as the training job logs them (SANDBOX_TRAIN_SERIALIZATION_FORMAT, pickle by
default). The schema kind is a torch.export program whatever production's format: torch.export traces
production's module as loaded, an eager module from a pickle or a graph module from a program alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from mlops_sandbox import registry

TRAINING_ARGS: dict[str, tuple[str, ...]] = {
    "good": (),
    "worse": ("--max-steps", "4", "--train-limit", "512"),
    # Six layers, not three: three (37 M parameters, 12 ms per image) measured 3.16x production's p99 on idle
    # cores, 2.17x with two busy loops at nice 10 beside them, and 1.68x in one CI run, which promoted it under
    # the 2x rule; four measured 3.06x and six 9.59x beside the same loops (12.41x idle; 2026-12-02). Six make
    # the candidate's own replica queue at 50 % of the traffic, as a model too slow for its load does.
    # 1,000 images: the scenario rehearses the latency rule, and a forward pass costs the same however briefly
    # the network trained (5,000 took 41 s on 2 idle cores, and the CI run's slowest rollout test, 251 s, on
    # busy ones). Every core this process may run on (its CPU affinity: a container's --cpuset-cpus or taskset,
    # where os.cpu_count() counts the machine's): unlike the sandbox's own network (TrainingSettings.threads),
    # 4096-wide layers gain from them (one epoch of 5,000 images on 2 idle cores: 41 s with 2 threads, 72 s
    # with 1; 2026-12-02).
    "slower": (
        "--hidden-sizes",
        "4096,4096,4096,4096,4096,4096",
        "--epochs",
        "1",
        "--train-limit",
        "1000",
        "--threads",
        str(len(os.sched_getaffinity(0))),
    ),
}
KINDS = (*TRAINING_ARGS, "schema")
EXPERIMENT = "rollout-rehearsals"


def train(extra: Sequence[str]) -> str:
    """Register a new version with `python -m training.train EXTRA --alias none`; its version number.

    RuntimeError with the job's last line of error when training fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        argv = [sys.executable, "-m", "training.train", *extra, "--alias", "none", "--output-json", str(result)]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"training failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return str(json.loads(result.read_text())["version"])


def flat_signature_copy(client: MlflowClient, name: str, source_version: str) -> str:
    """Register `source_version`'s model again with a flat (-1, 784) input signature; the new version number."""
    import mlflow.pytorch  # torch is imported only by the one kind that needs it
    from torch import nn

    module = mlflow.pytorch.load_model(f"models:/{name}/{source_version}")
    flat = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), module)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 784))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
    )
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"flat-input copy of version {source_version}") as run:
        mlflow.set_tag("sandbox.rehearsal", "schema-breaking candidate")
        info = mlflow.pytorch.log_model(
            flat,
            name="model",
            signature=signature,
            input_example=np.zeros((2, 784), dtype=np.float32),
            serialization_format="pt2",
        )
    # The tracking server (3.17) refuses a models:/m-<id> source unless model_id names that logged model.
    version = client.create_model_version(name, info.model_uri, run_id=run.info.run_id, model_id=info.model_id)
    client.update_model_version(
        name,
        version.version,
        description=f"Rehearsal: version {source_version}'s weights with a flat (-1, 784) input signature.",
    )
    return str(version.version)


def make(kind: str, client: MlflowClient, name: str) -> str:
    """A new registered version of `kind` (see the module docstring); its version number. ValueError for
    an unknown kind; RegistryError when `schema` finds no @production to copy."""
    if kind == "schema":
        return flat_signature_copy(client, name, registry.resolve_version(client, name, "@production"))
    if kind not in TRAINING_ARGS:
        raise ValueError(f"unknown candidate {kind!r}: one of {', '.join(KINDS)}")
    return train(TRAINING_ARGS[kind])
