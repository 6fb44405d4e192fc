"""`mlflow server` with uvicorn in its place (services/mlflow/server_cli.py)."""

from __future__ import annotations

import subprocess
import sys

import mlflow.server

from infra.local.settings import LocalStackSettings
from services.mlflow import server_cli


def test_the_replacement_fits_this_environments_mlflow() -> None:
    assert server_cli.fits(mlflow.server._run_server), mlflow.__version__


def test_a_run_server_that_starts_its_server_another_way_does_not_fit() -> None:
    def run_server() -> None:
        subprocess.Popen(["uvicorn", "app"])

    assert not server_cli.fits(run_server)


def test_the_server_start_takes_over_the_process_and_other_calls_run_as_mlflows() -> None:
    script = (
        "import os\n"
        "from services.mlflow import server_cli\n"
        "print(server_cli.exec_server(['echo', 'synchronous'], capture_output=True).stdout.strip(), flush=True)\n"
        "print(os.getpid(), flush=True)\n"
        "server_cli.exec_server(['sh', '-c', 'echo $$ $MARK; exit 3'], extra_env={'MARK': 'm'}, "
        "capture_output=False, synchronous=False)\n"
        "print('not replaced', flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    synchronous, pid, replaced = result.stdout.splitlines()
    assert result.returncode == 3, result.stderr
    assert synchronous == "synchronous" and replaced == f"{pid} m"


def test_the_replacement_fits_the_tracking_servers_own_mlflow() -> None:
    # The tracking server runs a newer MLflow than this environment's, from its own (infra/bootstrap.sh).
    python = LocalStackSettings().tracking_interpreter
    assert python.exists(), f"no {python}: make it with bash infra/bootstrap.sh"
    probe = (
        "import mlflow, mlflow.server\n"
        "from services.mlflow.server_cli import fits\n"
        "print(mlflow.__version__, fits(mlflow.server._run_server))\n"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    version, fit = result.stdout.split()
    assert fit == "True", f"MLflow {version} starts its web server another way than server_cli.py replaces"
