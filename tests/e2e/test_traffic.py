"""The traffic generator against real MLServer: it keeps its rate, and its metrics tell the truth about answers."""

from __future__ import annotations

import json
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mlops_sandbox.mnist import load_test_set
from mlops_sandbox.v2 import V2Client
from services.traffic.generator import ImageCycle
from tests.e2e.conftest import MODEL, Stack
from tests.support import module_env, server
from tools.ports import free_port

pytestmark = pytest.mark.e2e

RATE, SECONDS = 40, 5
REQUESTS = RATE * SECONDS


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics page: (name, labels) → value."""
    text = requests.get(url, timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def traffic_env(target: str, protocol: str, metrics_port: int, mnist_root: Path, **overrides: str) -> dict[str, str]:
    settings = {
        "SANDBOX_TRAFFIC_TARGET": target,
        "SANDBOX_TRAFFIC_PROTOCOL": protocol,
        "SANDBOX_TRAFFIC_RATE": str(RATE),
        "SANDBOX_TRAFFIC_DURATION_SECONDS": str(SECONDS),
        "SANDBOX_TRAFFIC_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        "SANDBOX_MNIST_ROOT": str(mnist_root),
        "SANDBOX_MNIST_DOWNLOAD": "false",
    }
    return module_env(**{**settings, **overrides})


@pytest.fixture(scope="module")
def served_accuracy(stack: Stack, mnist_root: Path) -> float:
    """The served model's accuracy on the images the generator sends first (seed 0), asked in one request."""
    images, labels = load_test_set(mnist_root, download=False)
    batch, truth = ImageCycle(images.numpy(), labels.numpy(), per_request=REQUESTS, seed=0).batch(0)
    return float((V2Client(stack.serving_url, MODEL).infer(batch).digits == truth).mean())


def test_traffic_over_rest_and_grpc_reports_who_answered_and_how_well(
    stack: Stack, mnist_root: Path, served_accuracy: float, tmp_path: Path
) -> None:
    """A REST and a gRPC generator at once (the test's time is one run's): every answer counted, and attributed."""
    targets = {"rest": stack.serving_url, "grpc": f"127.0.0.1:{stack.grpc_port}"}
    with ExitStack() as running:
        runs = {}
        for protocol, target in targets.items():
            metrics_port = free_port()
            env = traffic_env(target, protocol, metrics_port, mnist_root)
            args = ("--summary-json", str(tmp_path / f"{protocol}.json"))
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            proc = running.enter_context(
                server(f"traffic-{protocol}", "services.traffic.entrypoint", env, tmp_path, metrics_url, args=args)
            )
            runs[protocol] = proc
            # While it runs, Prometheus sees answers attributed to the endpoint and the version that gave them.
            # Asked before the next generator starts: on a loaded machine, that start can outlast this run.
            ok = {"protocol": protocol, "backend": "direct", "model_version": stack.version, "outcome": "ok"}
            deadline, live = time.monotonic() + 20, 0.0
            while not live and time.monotonic() < deadline and proc.poll() is None:
                live = scrape(metrics_url).get(("sandbox_traffic_requests_total", frozenset(ok.items())), 0.0)
                time.sleep(0.2)
            assert 0 < live < REQUESTS, f"{protocol}: no ok request was counted while the generator ran"
        for proc in runs.values():
            assert proc.wait(timeout=SECONDS + 30) == 0

    for protocol in targets:
        log = (tmp_path / f"traffic-{protocol}.log").read_text()
        summary = json.loads((tmp_path / f"{protocol}.json").read_text())
        print(log.strip().splitlines()[-1])
        assert summary["scheduled"] == REQUESTS and summary["sent"] + summary["skipped"] == REQUESTS
        outcomes = summary["outcomes"]
        assert outcomes["client_error"] == outcomes["server_error"] == outcomes["transport_error"] == 0, log
        assert 0.9 * REQUESTS <= outcomes["ok"] <= REQUESTS, f"{outcomes['ok']} ok of {REQUESTS} due: {log}"
        [entry] = summary["backends"]
        assert (entry["backend"], entry["model_version"]) == ("direct", stack.version)
        assert entry["images"] == outcomes["ok"], entry
        # Online accuracy is the model's own on those images: exactly when nothing was skipped (one image of
        # slack for a near tie that batching could flip); each skipped image can move it by one image at most.
        slack = (summary["skipped"] + 1) / entry["images"]
        assert abs(entry["accuracy"] - served_accuracy) <= slack, (protocol, entry, served_accuracy)
        assert entry["accuracy"] >= 0.8, "the served model should have learned MNIST"
        assert f"direct v{stack.version}: accuracy" in log


def test_sigterm_stops_it_cleanly_with_a_summary(mnist_root: Path, tmp_path: Path) -> None:
    """Nothing listens on the target: every request is a transport error, and SIGTERM ends the run at once."""
    metrics_port, summary_path = free_port(), tmp_path / "summary.json"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    env = traffic_env(
        f"http://127.0.0.1:{free_port()}",
        "rest",
        metrics_port,
        mnist_root,
        SANDBOX_TRAFFIC_DURATION_SECONDS="600",
        SANDBOX_TRAFFIC_WAIT_SECONDS="0",
    )
    args = ("--summary-json", str(summary_path))
    with server("traffic-stop", "services.traffic.entrypoint", env, tmp_path, metrics_url, args=args) as proc:
        unanswered = frozenset(
            {"protocol": "rest", "backend": "unknown", "model_version": "", "outcome": "transport_error"}.items()
        )
        deadline = time.monotonic() + 20
        while not scrape(metrics_url).get(("sandbox_traffic_requests_total", unanswered)):
            assert time.monotonic() < deadline, "no transport error was counted"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["stopped"] and 0 < summary["sent"] < RATE * 600
    assert summary["outcomes"]["transport_error"] == summary["sent"] and summary["outcomes"]["ok"] == 0
