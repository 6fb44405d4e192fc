"""Eight training jobs log through one tracking server at the same time, on SQLite and on PostgreSQL:
none fails, every metric point they log is in the database, and the registered versions are 1..8."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy

from tests.support import PROJECT_ROOT, PYTHON, module_env, tracking_server
from tools.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

JOBS = 8
MODEL = "concurrent_mnist"
EPOCHS = 2
# Small jobs (the machine has 2 cores), but chatty: the batch loss is logged at every step.
TRAIN_ARGS = (
    "--train-limit",
    "1000",
    "--epochs",
    str(EPOCHS),
    "--hidden-sizes",
    "32",
    "--log-every-steps",
    "1",
    "--alias",
    "none",
    "--model-name",
    MODEL,
)


def expected_points(params: dict[str, str]) -> int:
    """The metric points one job logs: 4 per epoch, test loss and accuracy, and one batch loss per step."""
    steps = int(params["epochs"]) * math.ceil(int(params["train_size"]) / int(params["batch_size"]))
    return 4 * int(params["epochs"]) + 2 + steps // int(params["log_every_steps"])


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eight_jobs_at_once_lose_nothing(
    backend: str, tmp_path: Path, mnist_root: Path, request: pytest.FixtureRequest
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_uri")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = module_env(
        MLFLOW_BACKEND_STORE_URI=store, MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"), MLFLOW_PORT=str(port)
    )
    job_env = module_env(MLFLOW_TRACKING_URI=url, SANDBOX_MNIST_ROOT=str(mnist_root), OMP_NUM_THREADS="1")
    with tracking_server(env, tmp_path, f"{url}/health"):
        began = time.monotonic()
        jobs = []
        for index in range(JOBS):
            log = open(tmp_path / f"job-{index}.log", "wb")  # noqa: SIM115 - closed below
            argv = [
                PYTHON,
                "-m",
                "training.train",
                *TRAIN_ARGS,
                "--seed",
                str(index),
                "--output-json",
                str(tmp_path / f"job-{index}.json"),
            ]
            jobs.append((subprocess.Popen(argv, env=job_env, cwd=PROJECT_ROOT, stdout=log, stderr=log), log))
        try:
            codes = [proc.wait(timeout=900) for proc, _ in jobs]
        finally:
            for proc, log in jobs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
        seconds = time.monotonic() - began
    outputs = [(tmp_path / f"job-{index}.log").read_text(errors="replace") for index in range(JOBS)]
    failed = {index: out[-2000:] for index, (code, out) in enumerate(zip(codes, outputs, strict=True)) if code}
    assert not failed, failed
    server_log = (tmp_path / "mlflow.log").read_text(errors="replace")
    assert "database is locked" not in server_log and not any("database is locked" in out for out in outputs)

    results = [json.loads((tmp_path / f"job-{index}.json").read_text()) for index in range(JOBS)]
    engine = sqlalchemy.create_engine(store)
    with engine.connect() as conn:
        # The training history only: system metrics are sampled by wall-clock time, so their count varies.
        history = "SELECT run_uuid, COUNT(*) FROM metrics WHERE key NOT LIKE 'system/%' GROUP BY run_uuid"
        rows = conn.execute(sqlalchemy.text(history)).all()
        stored: dict[str, int] = {str(run): int(count) for run, count in rows}
        params: dict[str, dict[str, str]] = {}
        for run_uuid, key, value in conn.execute(sqlalchemy.text("SELECT run_uuid, key, value FROM params")):
            params.setdefault(run_uuid, {})[key] = value
        versions = conn.execute(
            sqlalchemy.text("SELECT version, run_id FROM model_versions WHERE name = :name ORDER BY version"),
            {"name": MODEL},
        ).all()
    engine.dispose()
    expected = {r["run_id"]: expected_points(params[r["run_id"]]) for r in results}
    assert stored == expected
    assert [v for v, _ in versions] == list(range(1, JOBS + 1))
    assert {run_id for _, run_id in versions} == set(expected)
    assert sorted(int(r["version"]) for r in results) == list(range(1, JOBS + 1))
    print(
        f"\n{backend}: {JOBS} jobs in {seconds:.0f} s, {sum(stored.values())} metric points persisted "
        f"of {sum(expected.values())} logged, 0 failures, versions {versions[0][0]}..{versions[-1][0]}"
    )
