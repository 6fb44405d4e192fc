"""A deployment rehearsal: train, stage, smoke-test, gate, promote, verify, roll back, verify.

    python -m infra.ops.rehearsal [--candidate VERSION] [--tolerance 0.005] [-n 2000]
    python -m infra.ops.rehearsal good|schema|worse|slower|shadow [...]   # a rollout rehearsal instead

Runs against the sandbox's tracking server (MLFLOW_TRACKING_URI) and its two endpoints (SANDBOX_SERVING_URL for
@production, SANDBOX_STAGING_URL for @staging), local stack or compose alike, and prints a timeline
with a timestamp and a result for each step. Exits non-zero at the first step that fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mlflow.tracking import MlflowClient

from infra.ops.rollout import rehearse as rollout_rehearse
from mlops_sandbox import registry
from mlops_sandbox.gate import endpoint_accuracy, gate_and_promote, wait_until_served
from mlops_sandbox.mnist import load_test_set
from mlops_sandbox.settings import EndpointSettings, MnistSettings, ModelReference, TrackingClientSettings, command_name
from mlops_sandbox.tracking import connect
from mlops_sandbox.waiting import on_stderr

SMOKE_IMAGES = 200
SMOKE_MIN_ACCURACY = 0.8
SWITCH_SECONDS = 10.0


@dataclass
class Timeline:
    steps: list[tuple[str, str, float, bool, str]] = field(default_factory=list)

    def run(self, name: str, step: Callable[[], str]) -> bool:
        began_at, began = datetime.now().strftime("%H:%M:%S"), time.monotonic()
        try:
            detail, ok = step(), True
        except Exception as err:  # a failed step ends the rehearsal and is reported, whatever it was
            detail, ok = f"{type(err).__name__}: {err}", False
        self.steps.append((began_at, name, time.monotonic() - began, ok, detail))
        print(
            f"{began_at}  {'ok  ' if ok else 'FAIL'}  {name:<28} {time.monotonic() - began:6.1f} s  {detail}",
            flush=True,
        )
        return ok


def train_candidate() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        done = subprocess.run(
            [sys.executable, "-m", "training.train", "--alias", "staging", "--output-json", str(result)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"training failed: {done.stderr.strip().splitlines()[-1:]}")
        return str(json.loads(result.read_text())["version"])


def main(argv: list[str] | None = None) -> int:
    args_ = sys.argv[1:] if argv is None else argv
    if args_ and args_[0] in rollout_rehearse.SCENARIOS:
        # `sandbox rehearse good`, as `bash infra/sandbox.sh rehearse good` and `docker compose run cli rehearse good`.
        return rollout_rehearse.main(args_)
    if args_ and not args_[0].startswith("-"):
        print(
            f"{command_name('infra.ops.rehearsal')}: no scenario {args_[0]!r}: without one, the deployment rehearsal; "
            f"a rollout rehearsal with one of {', '.join(rollout_rehearse.SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(
        prog=command_name("infra.ops.rehearsal"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--candidate", help="rehearse this registered version instead of training a new one")
    parser.add_argument("--tolerance", type=float, default=0.005, help="gate: allowed accuracy drop")
    parser.add_argument("-n", "--images", type=int, default=2_000, help="gate: test images per version")
    args = parser.parse_args(argv)

    endpoints, tracking, mnist = EndpointSettings(), TrackingClientSettings(), MnistSettings()
    production_url, staging_url = endpoints.serving_url, endpoints.staging_url
    client: MlflowClient = connect(tracking, notice=on_stderr)
    name = ModelReference().name
    images, labels = load_test_set(mnist.root, download=mnist.download, limit=args.images)
    x, y = images.numpy(), labels.numpy()
    state: dict[str, str] = {}
    timeline = Timeline()
    print(f"rehearsal of {name} on {tracking.tracking_uri}: production {production_url}, staging {staging_url}")

    def stage() -> str:
        state["previous"] = registry.resolve_version(client, name, "@production")
        if args.candidate:
            state["candidate"] = registry.promote(client, name, args.candidate, "staging").version
        else:
            state["candidate"] = train_candidate()
        return f"version {state['candidate']} is @staging (production is version {state['previous']})"

    def smoke() -> str:
        accuracy = endpoint_accuracy(staging_url, name, state["candidate"], x[:SMOKE_IMAGES], y[:SMOKE_IMAGES])
        if accuracy < SMOKE_MIN_ACCURACY:
            raise RuntimeError(f"staging accuracy {accuracy:.4f} < {SMOKE_MIN_ACCURACY} on {SMOKE_IMAGES} images")
        return f"staging serves version {state['candidate']}, accuracy {accuracy:.4f} on {SMOKE_IMAGES} images"

    def gate() -> str:
        decision = gate_and_promote(
            client,
            name,
            state["candidate"],
            staging_url=staging_url,
            production_url=production_url,
            images=x,
            labels=y,
            tolerance=args.tolerance,
        )
        if not decision.promoted:
            raise RuntimeError(f"rejected: {decision.reason}")
        return f"promoted: {decision.reason}"

    def verify(key: str) -> Callable[[], str]:
        def check() -> str:
            took = wait_until_served(production_url, name, state[key], timeout=SWITCH_SECONDS)
            accuracy = endpoint_accuracy(production_url, name, state[key], x[:SMOKE_IMAGES], y[:SMOKE_IMAGES])
            return (
                f"production serves version {state[key]} {took:.1f} s after the move, accuracy {accuracy:.4f} on "
                f"{SMOKE_IMAGES} images"
            )

        return check

    def roll_back() -> str:
        return registry.rollback(client, name).describe()

    steps: list[tuple[str, Callable[[], str]]] = [
        ("train and stage", stage),
        ("smoke-test staging", smoke),
        ("gate, then promote", gate),
        ("verify production", verify("candidate")),
        ("roll back", roll_back),
        ("verify production again", verify("previous")),
    ]
    for step_name, step in steps:
        if not timeline.run(step_name, step):
            print("rehearsal FAILED")
            return 1
    print(f"rehearsal passed: {len(steps)} steps in {sum(s[2] for s in timeline.steps):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
