"""PostgreSQL, the tracking server's backend store, crashes (SIGKILL to its process group) while a training job
logs its run: the job fails in one line naming the backend store, and once PostgreSQL is back (after its crash
recovery) a rerun registers a version."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops_sandbox import registry
from mlops_sandbox.processes import stop_group
from mlops_sandbox.waiting import wait_for
from tests.e2e.test_faults import EXPERIMENT, FAULTS_MODEL, SMALLEST, assert_one_line_error, finish, logging_run
from tests.e2e.test_faults import start_training as start_job
from tests.support import TRACKING_PYTHON, module_env, restartable_server, run_module
from tools.ports import free_port
from tools.postgres.throwaway import start_postgres, throwaway_postgres, wait_until_accepting

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


@pytest.mark.timeout(600)
def test_postgres_killed_mid_run_fails_the_job_in_one_line_and_a_rerun_succeeds(
    tmp_path: Path, mnist_root: Path
) -> None:
    # A server of its own: the session's PostgreSQL serves the other tests, and this one crashes it.
    with throwaway_postgres() as postgres:
        port = free_port()
        tracking_uri = f"http://127.0.0.1:{port}"
        server_env = module_env(
            MLFLOW_BACKEND_STORE_URI=postgres.uri(),
            MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"),
            MLFLOW_PORT=str(port),
        )
        job_env = module_env(
            MLFLOW_TRACKING_URI=tracking_uri,
            SANDBOX_MNIST_ROOT=str(mnist_root),
            MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
            SANDBOX_TRACKING_WAIT_SECONDS="4",
        )
        with restartable_server(
            "mlflow",
            "services.mlflow.entrypoint",
            server_env,
            tmp_path,
            f"{tracking_uri}/health",
            python=TRACKING_PYTHON,
        ):
            client = MlflowClient(tracking_uri)
            began = int(time.time() * 1000)
            job = start_job(job_env)
            try:
                run = wait_for(
                    lambda: logging_run(client, began),
                    service="the run",
                    address=tracking_uri,
                    timeout=180,
                    interval=0.1,
                )
                postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
                os.killpg(postmaster, signal.SIGKILL)
                # The postmaster is this process's child (throwaway_postgres started it): reap it, or its pid
                # would still be taken, and PostgreSQL refuses to start again beside a live postmaster.pid.
                os.waitpid(postmaster, 0)
                code, stderr = finish(job)
            finally:
                job.kill()
            assert code == 2
            line = assert_one_line_error(
                stderr, f"MLflow tracking server at {tracking_uri} cannot reach its backend store while logging run"
            )
            print(f"\nkilled PostgreSQL once run {run.info.run_id} had logged {sorted(run.data.metrics)[:2]}...")
            print(f"the job said: {line}")

            restarted = start_postgres(postgres)
            try:
                wait_until_accepting(postgres, restarted, timeout=60)
                rerun = run_module("training.train", *SMALLEST, env=job_env)
                assert rerun.returncode == 0, rerun.stderr[-3000:]
                assert registry.resolve_version(client, FAULTS_MODEL, "@staging") == "1"
                assert registry.inconsistencies(client, FAULTS_MODEL) == []
            finally:
                stop_group(restarted.pid, grace=15, leader=restarted)
