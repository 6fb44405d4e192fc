"""`mlflow models serve` with `mlserver start` in its place (services/serving/mlflow_serve.py), and its pin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from services.serving import mlflow_serve


def test_the_replacement_fits_the_pinned_mlflow() -> None:
    mlflow_serve.check()


def test_another_mlflow_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlflow, "__version__", "3.13.0")
    with pytest.raises(RuntimeError, match="written for mlflow==3.12.0, not 3.13.0"):
        mlflow_serve.check()


def test_only_the_server_command_is_replaced() -> None:
    assert mlflow_serve.is_server_command(["bash", "-c", "exec mlserver start /model"])
    for other in (["conda", "--version"], ["bash", "-c", "mlserver start"], "exec mlserver", ["bash", "-c"]):
        assert not mlflow_serve.is_server_command(other)


def test_the_server_command_takes_over_the_process_with_its_environment(tmp_path: Path) -> None:
    # What MLflow's local path calls, in a process of its own: the command must run as that process (same
    # pid), with the environment and preexec_fn MLflow gave it, and its exit code must be the process's.
    script = (
        "import os, sys\n"
        "from services.serving import mlflow_serve\n"
        "print(os.getpid(), flush=True)\n"
        "mlflow_serve._ExecSubprocess().Popen(['bash', '-c', 'exec sh -c \"echo $$ $MARK; exit 7\"'], "
        "env={'MARK': 'from-mlflow', 'PATH': os.environ['PATH']}, preexec_fn=lambda: print('pre', flush=True))\n"
        "print('not replaced', flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid, pre, replaced = result.stdout.splitlines()
    assert result.returncode == 7, result.stderr
    assert pre == "pre" and replaced == f"{pid} from-mlflow"


def test_mlserver_takes_over_through_the_follower_launcher_with_the_same_arguments() -> None:
    argv = mlflow_serve.server_argv(["bash", "-c", "exec mlserver start '/srv/model dir/current'"])
    assert argv == [sys.executable, "-m", "services.serving.mlserver_start", "start", "/srv/model dir/current"]
    other = ["bash", "-c", "exec gunicorn app"]
    assert mlflow_serve.server_argv(other) == other
