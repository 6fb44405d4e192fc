"""Faults survived: the session's tracking server and S3 server crash (SIGKILL to the process group) at real
moments of a training job, of a promotion and of serving under load, and come back.

Training and promotions here use their own registered model (FAULTS_MODEL), so that the session's model
keeps its versions and aliases; serving is the session's endpoint, and gets its @production back.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from pydantic import SecretStr

from mlops_sandbox import registry
from mlops_sandbox.gate import wait_until_served
from mlops_sandbox.mnist import load_test_set
from mlops_sandbox.s3 import s3_client
from mlops_sandbox.v2 import rest_request_body
from mlops_sandbox.waiting import NotReadyYet, wait_for
from tests.crash_proxy import CrashProxy
from tests.e2e.conftest import MODEL, Stack
from tests.e2e.test_follow import RELOAD_WINDOW, LoadGenerator
from tests.support import PROJECT_ROOT, PYTHON, logged_model_id, run_module

pytestmark = pytest.mark.e2e

FAULTS_MODEL = "faults_simplenn"
EXPERIMENT = "faults"
RETRY_SECONDS = "4"
"""SANDBOX_TRACKING_WAIT_SECONDS of the jobs here: how long each request retries a server that is gone."""
SMALLEST = ("--train-limit", "1000", "--epochs", "1", "--hidden-sizes", "32", "--model-name", FAULTS_MODEL)
"""The smallest training the job allows that still logs everything: 1,000 images, one epoch, 32 units."""


def job_env(stack: Stack, mnist_root: Path, **overrides: str) -> dict[str, str]:
    env = stack.client_env(SANDBOX_MNIST_ROOT=str(mnist_root), MLFLOW_EXPERIMENT_NAME=EXPERIMENT)
    env["SANDBOX_TRACKING_WAIT_SECONDS"] = RETRY_SECONDS
    env.update(overrides)
    return env


def start_training(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "training.train", *SMALLEST, *args],
        env=env,
        cwd=str(PROJECT_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def logging_run(client: MlflowClient, since_ms: int) -> Run:
    """The run started after `since_ms` once it has logged its first metric (NotReadyYet before)."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise NotReadyYet("no experiment yet")
    runs = client.search_runs([experiment.experiment_id], f"attributes.start_time > {since_ms}")
    if not runs or not runs[0].data.metrics:
        raise NotReadyYet("no run with a metric yet")
    return runs[0]


def finish(job: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = job.communicate(timeout=120)
    return job.returncode, stderr


def assert_one_line_error(stderr: str, *expected: str) -> str:
    """The job said what went wrong in one line, its last: no traceback, and no other line about the failure
    (MLflow's retries, its system-metrics thread). MLflow's usual log lines of a run may come before it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-4000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], stderr[-4000:]
    line = errors[0]
    others = "\n".join(lines[:-1])
    for symptom in ("refused", "Max retries", "Failed to", "500", "ERROR"):
        assert symptom not in others, others
    for part in expected:
        assert part in line, line
    return line


def bucket_keys(stack: Stack) -> set[str]:
    s3 = s3_client(
        stack.s3_endpoint,
        SecretStr(stack.s3_keys["AWS_ACCESS_KEY_ID"]),
        SecretStr(stack.s3_keys["AWS_SECRET_ACCESS_KEY"]),
    )
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mlflow"):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def assert_every_ready_version_has_its_model_files(stack: Stack, client: MlflowClient, name: str) -> None:
    """No READY version of `name` whose model files (MLmodel and the weights) are missing from the bucket."""
    keys = bucket_keys(stack)
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.status != "READY":
            continue
        # MLflow 3 registers a logged model: the version's source is models:/<model id>.
        assert version.source and version.source.startswith("models:/m-"), version.source
        location = client.get_logged_model(version.source.removeprefix("models:/")).artifact_location
        # Behind the artifact proxy, mlflow-artifacts:/ is the bucket's root (MLFLOW_ARTIFACTS_DESTINATION).
        prefix = location.removeprefix("mlflow-artifacts:/").removeprefix("s3://mlflow/").strip("/") + "/"
        files = {k.removeprefix(prefix) for k in keys if k.startswith(prefix)}
        assert "MLmodel" in files and "data/model.pth" in files, (version.version, sorted(files))


def test_tracking_server_killed_mid_run_fails_the_job_in_one_line(stack: Stack, mnist_root: Path) -> None:
    client = MlflowClient(stack.tracking_uri)
    began = int(time.time() * 1000)
    job = start_training(job_env(stack, mnist_root))
    try:
        run = wait_for(
            lambda: logging_run(client, began), service="the run", address=stack.tracking_uri, timeout=120, interval=0.1
        )
        stack.mlflow.kill()
        code, stderr = finish(job)
    finally:
        job.kill()
        if stack.mlflow.proc is not None and stack.mlflow.proc.poll() is not None:
            stack.mlflow.start()
    print(f"\nkilled the tracking server once run {run.info.run_id} had logged {sorted(run.data.metrics)}")
    assert code == 2
    line = assert_one_line_error(stderr, f"MLflow tracking server at {stack.tracking_uri}", "connection refused")
    print(f"the job said: {line}")


def test_s3_killed_mid_run_fails_the_job_in_one_line_naming_the_object_store(stack: Stack, mnist_root: Path) -> None:
    client = MlflowClient(stack.tracking_uri)
    began = int(time.time() * 1000)
    job = start_training(job_env(stack, mnist_root))
    try:
        run = wait_for(
            lambda: logging_run(client, began), service="the run", address=stack.tracking_uri, timeout=120, interval=0.1
        )
        stack.s3.kill()
        code, stderr = finish(job)
    finally:
        job.kill()
        if stack.s3.proc is not None and stack.s3.proc.poll() is not None:
            stack.s3.start()
    assert code == 2
    line = assert_one_line_error(
        stderr, f"MLflow tracking server at {stack.tracking_uri} cannot reach its artifact store while logging run"
    )
    print(f"\nkilled S3 once run {run.info.run_id} had logged {sorted(run.data.metrics)}; the job said: {line}")
    # The server outlived its object store: it recorded that the run failed.
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def test_tracking_server_killed_mid_registration_leaves_no_hole(stack: Stack, mnist_root: Path) -> None:
    client = MlflowClient(stack.tracking_uri)
    before = {v.version for v in client.search_model_versions(f"name = '{FAULTS_MODEL}'")}

    def created(method: str, path: str) -> bool:
        return method == "POST" and path == "/api/2.0/mlflow/model-versions/create"

    with CrashProxy(stack.tracking_uri, after=created, crash=stack.mlflow.kill) as proxy:
        job = start_training(job_env(stack, mnist_root, MLFLOW_TRACKING_URI=proxy.url))
        try:
            code, stderr = finish(job)
        finally:
            job.kill()
            stack.mlflow.start()
    assert proxy.crashed_after is not None, "the job never created a model version"
    assert code == 2
    line = assert_one_line_error(stderr, f"MLflow tracking server at {proxy.url}", "connection refused")
    print(f"\nkilled the tracking server after {proxy.crashed_after}; the job said: {line}")

    half_done = {v.version for v in client.search_model_versions(f"name = '{FAULTS_MODEL}'")} - before
    assert len(half_done) == 1
    assert_every_ready_version_has_its_model_files(stack, client, FAULTS_MODEL)
    # Once the server is back, a rerun registers the next version and gets the alias.
    rerun = run_module("training.train", *SMALLEST, env=job_env(stack, mnist_root))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    staged = registry.resolve_version(client, FAULTS_MODEL, "@staging")
    assert int(staged) > int(next(iter(half_done)))
    assert_every_ready_version_has_its_model_files(stack, client, FAULTS_MODEL)
    assert registry.inconsistencies(client, FAULTS_MODEL) == []
    listed = run_module("infra.ops.registry", "--model-name", FAULTS_MODEL, "list", env=stack.client_env())
    assert listed.returncode == 0, listed.stderr
    print(listed.stdout + listed.stderr)


def test_tracking_server_killed_between_alias_and_stage_moves_is_repaired_by_the_next_call(stack: Stack) -> None:
    client = MlflowClient(stack.tracking_uri)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{FAULTS_MODEL}'"))
    assert len(versions) >= 2, "the tests before this one register versions of FAULTS_MODEL"
    old, new = str(versions[-2]), str(versions[-1])
    registry.promote(client, FAULTS_MODEL, old, "production")

    def alias_moved(method: str, path: str) -> bool:
        return method == "POST" and path == "/api/2.0/mlflow/registered-models/alias"

    with CrashProxy(stack.tracking_uri, after=alias_moved, crash=stack.mlflow.kill) as proxy:
        env = stack.client_env(SANDBOX_TRACKING_WAIT_SECONDS=RETRY_SECONDS)
        env["MLFLOW_TRACKING_URI"] = proxy.url
        try:
            promoted = run_module(
                "infra.ops.registry", "--model-name", FAULTS_MODEL, "promote", new, "--to", "production", env=env
            )
        finally:
            stack.mlflow.start()
    assert proxy.crashed_after is not None
    assert promoted.returncode == 1
    line = assert_one_line_error(promoted.stderr, f"MLflow tracking server at {proxy.url}", "connection refused")
    print(f"\nkilled the tracking server after {proxy.crashed_after}; the CLI said: {line}")
    # The alias moved and the stages did not: the registry contradicts itself until the next call.
    assert registry.resolve_version(client, FAULTS_MODEL, "@production") == new
    assert client.get_model_version(FAULTS_MODEL, new).current_stage != "Production"
    assert registry.inconsistencies(client, FAULTS_MODEL) != []

    listed = run_module("infra.ops.registry", "--model-name", FAULTS_MODEL, "list", env=stack.client_env())
    assert listed.returncode == 0, listed.stderr
    print(f"the next CLI call said: {listed.stderr.strip()}")
    assert f"repaired a half-done promotion: version {new} is @production" in listed.stderr
    assert registry.inconsistencies(client, FAULTS_MODEL) == []
    assert client.get_model_version(FAULTS_MODEL, new).current_stage == "Production"
    assert client.get_model_version(FAULTS_MODEL, old).current_stage == "Archived"


def test_serving_answers_every_request_while_registry_and_s3_are_down(stack: Stack, mnist_root: Path) -> None:
    client = MlflowClient(stack.tracking_uri)
    served = stack.version
    wait_until_served(stack.serving_url, MODEL, served, timeout=RELOAD_WINDOW)
    images, _ = load_test_set(mnist_root, download=False, limit=4)
    url = f"{stack.serving_url}/v2/models/{MODEL}/infer"
    with LoadGenerator(url, rest_request_body(images.numpy())) as load:
        time.sleep(1.0)
        stack.mlflow.kill()
        stack.s3.kill()
        down_at, before_outage = time.monotonic(), len(load.results)
        try:
            time.sleep(20.0)
            during = len(load.results) - before_outage
        finally:
            stack.s3.start()
            stack.mlflow.start()
        back_at = time.monotonic()
        time.sleep(1.0)
    assert load.failures == [], load.failures[:5]
    assert during > 100, during
    print(f"\nregistry and S3 down for {back_at - down_at:.0f} s: {during} requests answered, 0 failed")

    # The follower resumes: the next promotion (a new version of the served model) is served.
    source = client.get_model_version(MODEL, served)
    assert source.source is not None
    moved = client.create_model_version(
        MODEL, source.source, run_id=source.run_id, model_id=logged_model_id(source.source)
    )
    try:
        registry.promote(client, MODEL, moved.version, "production")
        took = wait_until_served(stack.serving_url, MODEL, str(moved.version), timeout=stack.poll_seconds / 2)
        print(f"then version {moved.version} was promoted, and served {took:.1f} s later")
    finally:
        # The session's later tests expect the fixture's version in production, and the only version of the
        # model (test_version_pair, test_mlflow_ui): put it back, and take the copy and its trace away.
        registry.promote(client, MODEL, served, "production")
        wait_until_served(stack.serving_url, MODEL, served, timeout=stack.poll_seconds / 2)
        registry.delete_version(client, MODEL, str(moved.version))
        client.delete_model_version_tag(MODEL, served, registry.PREVIOUS_PRODUCTION_TAG)
