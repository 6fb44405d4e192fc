"""A version registered by the layout before the shared core (commit d5a4f95) still loads and serves.

That version pickles `training.model.SimpleNN` and ships training/model.py with it (code_paths); the move
kept that import path. The test trains it with the old code itself, taken from git, against the same tracking
server as the other end-to-end tests, then loads and serves it with today's code.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mlops_sandbox.v2 import V2Client
from tests.e2e.conftest import Stack
from tests.support import PROJECT_ROOT, PYTHON, run_module, server
from tools.ports import free_port

pytestmark = pytest.mark.e2e

LEGACY_COMMIT = "d5a4f95cd7c4532893ebf1996bb96cae5cf80f55"
LEGACY_MODEL = "legacy_simplenn_mnist"
LOAD = """
import mlflow, torch
from mlops_sandbox.mnist import load_test_set
from mlops_sandbox.settings import MnistSettings

model = mlflow.pytorch.load_model("models:/{name}/{version}")
images, labels = load_test_set(MnistSettings().root, download=False, limit=500)
with torch.no_grad():
    print(type(model).__name__, float((model(images).argmax(dim=1) == labels).float().mean()))
"""


@pytest.fixture(scope="module")
def legacy_version(stack: Stack, mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A version of LEGACY_MODEL, trained and registered by the code of LEGACY_COMMIT."""
    known = subprocess.run(["git", "cat-file", "-e", f"{LEGACY_COMMIT}^{{commit}}"], cwd=PROJECT_ROOT)
    assert known.returncode == 0, f"this test needs the git history back to {LEGACY_COMMIT} (not a shallow clone)"
    tree = tmp_path_factory.mktemp("legacy")
    archive = subprocess.run(
        ["git", "archive", LEGACY_COMMIT, "training", "services"], cwd=PROJECT_ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    result = tree / "result.json"
    # The old layout's variable names. Run from the old tree, whose packages come first on sys.path.
    env = stack.client_env(MNIST_ROOT=str(mnist_root), MODEL_NAME=LEGACY_MODEL)
    argv = ["--train-limit", "2000", "--epochs", "1", "--alias", "none", "--output-json", str(result)]
    trained = subprocess.run(
        [PYTHON, "-m", "training.train", *argv], cwd=tree, env=env, capture_output=True, text=True, timeout=600
    )
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    return str(json.loads(result.read_text())["version"])


def test_the_old_version_loads_with_mlflow_pytorch_load_model(
    stack: Stack, legacy_version: str, mnist_root: Path
) -> None:
    env = stack.client_env(SANDBOX_MNIST_ROOT=str(mnist_root))
    code = LOAD.format(name=LEGACY_MODEL, version=legacy_version)
    loaded = subprocess.run(
        [PYTHON, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    kind, accuracy = loaded.stdout.split()
    assert kind == "Sequential" and float(accuracy) >= 0.8


def test_the_old_version_is_served_by_todays_serving(
    stack: Stack, legacy_version: str, tmp_path: Path, mnist_root: Path
) -> None:
    port = free_port()
    env = stack.serving_env(
        SANDBOX_MODEL_NAME=LEGACY_MODEL,
        SANDBOX_MODEL_REF=legacy_version,
        MLSERVER_HTTP_PORT=str(port),
        MLSERVER_GRPC_PORT=str(free_port()),
        MLSERVER_METRICS_PORT=str(free_port()),
    )
    url = f"http://127.0.0.1:{port}"
    with server(
        "serving-legacy", "services.serving.entrypoint", env, tmp_path, f"{url}/v2/models/{LEGACY_MODEL}/ready"
    ):
        checked = run_module(
            "infra.ops.predict",
            "--serving-url",
            url,
            "--served-model",
            LEGACY_MODEL,
            "-n",
            "500",
            "--min-accuracy",
            "0.8",
            env=stack.client_env(SANDBOX_MNIST_ROOT=str(mnist_root)),
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"served version {legacy_version}" in checked.stdout
        assert V2Client(url, LEGACY_MODEL).served_version() == legacy_version
