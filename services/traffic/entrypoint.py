"""A traffic generator that knows the truth: real MNIST test images at a fixed rate, every answer graded.

    python -m services.traffic.entrypoint [--summary-json PATH]

It sends SANDBOX_TRAFFIC_RATE requests/s of SANDBOX_TRAFFIC_IMAGES_PER_REQUEST test images each (seeded
order, cycled) to SANDBOX_TRAFFIC_TARGET over V2 REST or gRPC for SANDBOX_TRAFFIC_DURATION_SECONDS, open
loop (services/traffic/generator.py), and exports on SANDBOX_TRAFFIC_METRICS_ADDRESS which backend and model
version answered, how, how fast, and how often rightly (services/traffic/metrics.py): what a canary or shadow
rollout is judged by. It only sends to loopback or a compose service name. At the end, or on SIGTERM/Ctrl+C,
it prints a one-line summary, writes the JSON one if asked, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server
from pydantic import ValidationError

from mlops_sandbox.mnist import MnistUnavailable, load_test_set
from mlops_sandbox.settings import command_name
from mlops_sandbox.v2 import V2Client
from mlops_sandbox.waiting import DependencyUnavailable, wait_for
from services.traffic.generator import ImageCycle, run_open_loop
from services.traffic.metrics import Recorder, summary_line
from services.traffic.senders import GrpcSender, RestSender
from services.traffic.settings import TrafficSettings


class StopRequested(Exception):
    """SIGTERM or Ctrl+C arrived before the first request."""


def wait_until_ready(settings: TrafficSettings, stop: threading.Event) -> None:
    """Wait up to wait_seconds for the target to answer that the model is ready; DependencyUnavailable if not."""
    client = V2Client(settings.target, settings.model.name, protocol=settings.protocol, timeout=settings.timeout)

    def probe() -> None:
        if stop.is_set():
            raise StopRequested
        client.check_ready()

    try:
        wait_for(
            probe,
            service="the inference endpoint",
            address=client.infer_url,
            timeout=settings.wait_seconds,
            hint="Check that serving (or the router in front of it) runs, and SANDBOX_TRAFFIC_TARGET/PROTOCOL.",
        )
    finally:
        client.client.close()


def run(settings: TrafficSettings, recorder: Recorder, cycle: ImageCycle, stop: threading.Event) -> dict[str, Any]:
    """Send for the whole duration (or until `stop`); return the summary (Recorder.summary)."""
    sender: RestSender | GrpcSender
    if settings.protocol == "grpc":
        sender = GrpcSender(settings.target, settings.model.name, timeout=settings.timeout)
    else:
        sender = RestSender(settings.infer_url, timeout=settings.timeout, connections=settings.concurrency)

    def send(request: int) -> None:
        batch, truth = cycle.batch(request)
        recorder.record(sender(batch, truth), truth)

    try:
        result = run_open_loop(
            send,
            rate=settings.rate,
            duration=settings.duration,
            concurrency=settings.concurrency,
            stop=stop,
            on_skip=recorder.skip,
        )
    finally:
        sender.close()
    return recorder.summary(
        result,
        target=settings.infer_url,
        rate=settings.rate,
        duration_seconds=settings.duration,
        images_per_request=settings.images_per_request,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the generator; 0 when it ran (whatever the answers), 1 when it could not start, 2 for bad settings."""
    parser = argparse.ArgumentParser(
        prog=command_name("services.traffic.entrypoint"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--summary-json", type=Path, help="write the totals per backend and version here at the end")
    args = parser.parse_args(argv)
    try:
        settings = TrafficSettings()
    except ValidationError as err:
        print(f"invalid traffic settings:\n{err}", file=sys.stderr)
        return 2
    summary_path = args.summary_json or settings.summary_json

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        print(f"traffic: {signal.Signals(signum).name}, stopping", flush=True)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)

    recorder = Recorder(settings.protocol)
    # Up before the first request, so that a scrape during the start finds the metrics (at zero) rather than nothing.
    metrics_address = settings.metrics_address
    host, port = settings.metrics_host_port
    try:
        start_http_server(port, host, registry=recorder.registry)
    except OSError as err:
        print(f"traffic: cannot serve metrics on {metrics_address} ({err})", file=sys.stderr)
        return 1
    try:
        images, labels = load_test_set(settings.mnist.root, download=settings.mnist.download)
        if settings.wait_seconds:
            wait_until_ready(settings, stop)
    except StopRequested:
        return 0
    except (MnistUnavailable, DependencyUnavailable) as err:
        print(f"traffic: {err}", file=sys.stderr)
        return 1
    cycle = ImageCycle(images.numpy(), labels.numpy(), per_request=settings.images_per_request, seed=settings.seed)

    print(
        f"traffic: {settings.rate:g} requests/s of {settings.images_per_request} image(s) for {settings.duration:g} s "
        f"to {settings.infer_url}; metrics on http://{metrics_address}/metrics",
        flush=True,
    )
    summary = run(settings, recorder, cycle, stop)
    for outcome, detail in recorder.first_errors.items():
        print(f"traffic: first {outcome}: {detail}", flush=True)
    print(summary_line(summary), flush=True)
    if summary_path:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
