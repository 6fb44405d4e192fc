"""Deployment rehearsal under load: serving follows @production through promotions and rollbacks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient

from mlops_sandbox import registry
from mlops_sandbox.gate import served_version, wait_until_served
from mlops_sandbox.mnist import load_test_set
from mlops_sandbox.v2 import rest_request_body
from mlops_sandbox.waiting import NotReadyYet, wait_for
from tests.e2e.conftest import MODEL, Stack
from tests.support import run_module

pytestmark = pytest.mark.e2e

RELOAD_WINDOW = 10.0  # seconds after an alias move in which the old version may still answer

JSON = {"Content-Type": "application/json"}


@dataclass
class LoadGenerator:
    """Constant load on loopback from a few threads, bounded in time and in request count."""

    url: str
    body: bytes
    threads: int = 4
    max_requests: int = 50_000
    max_seconds: float = 300.0
    results: list[tuple[float, float, str | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _worker(self) -> None:
        session = requests.Session()
        deadline = time.monotonic() + self.max_seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            if len(self.results) + len(self.failures) >= self.max_requests:
                return
            sent = time.monotonic()
            try:
                response = session.post(self.url, data=self.body, headers=JSON, timeout=30)
            except requests.RequestException as err:
                self.failures.append(f"{type(err).__name__}: {err}")
                continue
            if response.status_code != 200:
                self.failures.append(f"{response.status_code}: {response.text[:200]}")
            else:
                self.results.append((sent, time.monotonic(), response.json().get("model_version")))

    def __enter__(self) -> LoadGenerator:
        self._pool = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.threads)]
        for thread in self._pool:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._pool:
            thread.join(timeout=60)


@pytest.fixture(scope="module")
def second_version(stack: Stack, mnist_root: Path) -> str:
    trained = run_module(
        "training.train",
        "--train-limit",
        "3000",
        "--epochs",
        "1",
        "--alias",
        "staging",
        env=stack.client_env(SANDBOX_MNIST_ROOT=str(mnist_root)),
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    return registry.resolve_version(MlflowClient(stack.tracking_uri), MODEL, "@staging")


def test_ten_switches_under_load_fail_no_request(stack: Stack, second_version: str, mnist_root: Path) -> None:
    client = MlflowClient(stack.tracking_uri)
    images, _ = load_test_set(mnist_root, download=False, limit=4)
    wait_until_served(stack.serving_url, MODEL, stack.version, timeout=RELOAD_WINDOW)
    moves: list[tuple[float, str]] = [(time.monotonic(), stack.version)]
    switch_times = []
    with LoadGenerator(f"{stack.serving_url}/v2/models/{MODEL}/infer", rest_request_body(images.numpy())) as load:
        time.sleep(1.0)
        for i in range(10):
            if i % 2 == 0:
                target = registry.promote(client, MODEL, second_version, "production").version
            else:
                target = registry.rollback(client, MODEL).version
            moves.append((time.monotonic(), target))
            switch_times.append(wait_until_served(stack.serving_url, MODEL, target, timeout=RELOAD_WINDOW))
        time.sleep(1.0)
    assert load.failures == [], load.failures[:5]
    assert len(load.results) > 100
    for sent, done, version in load.results:
        # The alias target when the request was sent; within the reload window also the one before it,
        # and the next one if the alias moved while the request was in flight.
        index = max(i for i, (moved, _) in enumerate(moves) if moved <= sent)
        allowed = {moves[index][1]}
        if index > 0 and sent - moves[index][0] < RELOAD_WINDOW:
            allowed.add(moves[index - 1][1])
        if index + 1 < len(moves) and done >= moves[index + 1][0]:
            allowed.add(moves[index + 1][1])
        assert version in allowed, (sent, version, moves)
    print(
        f"\n{len(load.results)} requests, {len(load.failures)} failed, 10 switches: median "
        f"{np.median(switch_times):.2f} s, max {max(switch_times):.2f} s"
    )
    assert max(switch_times) < RELOAD_WINDOW


def test_an_alias_move_reaches_serving_through_the_registry_webhook(stack: Stack, second_version: str) -> None:
    client = MlflowClient(stack.tracking_uri)
    assert registry.resolve_version(client, MODEL, "@production") == stack.version
    # There and back: the session's later tests (test_sandbox, test_kserve_storage) expect the fixture's version.
    for target in (second_version, stack.version):
        logged = len(stack.serving_log.read_bytes())
        registry.promote(client, MODEL, target, "production")
        # Served within half a poll interval, and the follower says the webhook woke it: polling did not. It
        # says so once MLServer's reload call returns, which may be just after the new version first answers.
        wait_until_served(stack.serving_url, MODEL, target, timeout=stack.poll_seconds / 2)
        line = f"moved to version {target} (woken by the registry's webhook)"

        def logged_line(start: int = logged, line: str = line) -> None:
            if line not in stack.serving_log.read_bytes()[start:].decode(errors="replace"):
                raise NotReadyYet(f"no '{line}' in the serving log yet")

        wait_for(logged_line, service="the follower's log line", address=str(stack.serving_log), timeout=10)


def test_served_version_is_visible_in_response_metadata_and_metrics(stack: Stack, mnist_root: Path) -> None:
    images, _ = load_test_set(mnist_root, download=False, limit=1)
    current = registry.resolve_version(MlflowClient(stack.tracking_uri), MODEL, "@production")
    wait_until_served(stack.serving_url, MODEL, current, timeout=RELOAD_WINDOW)
    body = requests.post(
        f"{stack.serving_url}/v2/models/{MODEL}/infer", data=rest_request_body(images.numpy()), headers=JSON, timeout=30
    ).json()
    assert body["model_version"] == current
    assert served_version(stack.serving_url, MODEL) == current
    metrics = requests.get(stack.metrics_url, timeout=10).text
    assert f'served_model_requests_total{{model_name="{MODEL}",model_version="{current}"}}' in metrics
