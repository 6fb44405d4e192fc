"""Progressive delivery of a registered version: `python -m infra.ops.rollout start VERSION`.

    python -m infra.ops.rollout start 7 --strategy canary --steps 10,50,100 --interval 30s
    python -m infra.ops.rollout start 7 --strategy shadow --interval 1m   # compared on mirrored traffic
    python -m infra.ops.rollout start 7 --strategy blue-green       # the gated switch, all at once

canary: the router sends a growing share of live traffic to the candidate endpoint (@staging), each step is
judged on Prometheus's metrics, and @production moves only when every step passed (controller.py). It needs
the router, Prometheus, and traffic through the router from the traffic generator (services/traffic), which
knows each image's label; without them it refuses to start.
shadow: production answers every request while the router copies a share of them to the candidate; both are
compared on the same traffic (accuracy, errors, latency, how alike their predicted digits are) for one
interval (shadow.py). A candidate that passes stays on @staging, or becomes production with --promote.
blue-green: the candidate is measured on MNIST test images on both endpoints and promoted when it is not
worse (mlops_sandbox.gate), then production takes all traffic at once.

Reads MLFLOW_TRACKING_URI, SANDBOX_MODEL_NAME, SANDBOX_SERVING_URL and SANDBOX_STAGING_URL (the endpoints),
SANDBOX_ROUTER_ADMIN_URL, SANDBOX_PROMETHEUS_URL and SANDBOX_ROLLOUT_METRICS_ADDRESS (docs/settings.md).
Exit status: 0 promoted (a shadow: passed), 1 aborted or rejected, 2 could not start or could not go on (all
traffic is then on production), 130 interrupted.
"""

from __future__ import annotations

import argparse
import re
import sys

from pydantic import ValidationError

from infra.ops.rollout.analysis import Thresholds
from infra.ops.rollout.controller import Canary, Endpoints, Plan, RolloutError
from infra.ops.rollout.settings import RolloutSettings
from infra.ops.rollout.shadow import Shadow
from mlops_sandbox import registry
from mlops_sandbox.gate import gate_and_promote
from mlops_sandbox.mnist import load_test_set
from mlops_sandbox.processes import stop_on_sigterm
from mlops_sandbox.prometheus import PrometheusQuery, PrometheusUnavailable
from mlops_sandbox.router import RouterAdmin, RouterBusy, RouterUnavailable
from mlops_sandbox.settings import (
    EndpointSettings,
    MnistSettings,
    ModelReference,
    TrackingClientSettings,
    command_name,
)
from mlops_sandbox.tracking import connect
from mlops_sandbox.v2 import InferenceError
from mlops_sandbox.waiting import on_stderr

UNITS = {"s": 1, "m": 60, "h": 3600}


def seconds(text: str) -> float:
    """`30`, `30s`, `2m` or `1h` as seconds; argparse's error for anything else."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s or 2m")
    return float(match[1]) * UNITS[match[2] or "s"]


def percents(text: str) -> tuple[float, ...]:
    """`10,50,100` (or `10%,50%,100%`) as (10.0, 50.0, 100.0); argparse's error unless increasing, in (0, 100],
    ending at 100."""
    try:
        steps = tuple(float(part.strip().removesuffix("%")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of percentages such as 10,50,100"
        ) from None
    if any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)) or steps[-1] != 100:
        raise argparse.ArgumentTypeError(f"{text!r}: steps must increase within (0, 100] and end at 100")
    return steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=command_name("infra.ops.rollout"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser(
        "start",
        help="roll a registered version out",
        description="Roll a registered version out as a canary (default) or a gated blue-green switch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    start.add_argument("version", help="the registered version to roll out (a number, or @alias)")
    start.add_argument(
        "--strategy", choices=("canary", "shadow", "blue-green"), default="canary", help="how traffic moves"
    )
    start.add_argument("--steps", type=percents, default="10,50,100", help="canary: %% of traffic per step")
    start.add_argument(
        "--interval", type=seconds, default="30s", help="canary: how long each step lasts; shadow: how long it lasts"
    )
    start.add_argument(
        "--shadow-percent",
        type=float,
        default=100.0,
        help="shadow: %% of production's requests copied to the candidate",
    )
    start.add_argument("--promote", action="store_true", help="shadow: make a candidate that passes @production")
    defaults = Thresholds()
    start.add_argument("--max-error-rate", type=float, default=defaults.max_error_rate, help="fraction, 0.01 = 1%%")
    start.add_argument("--max-p99-ratio", type=float, default=defaults.max_p99_ratio, help="candidate/production")
    start.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=defaults.max_accuracy_drop,
        help="how far the candidate's online accuracy may fall below production's (0.02 = 2 points)",
    )
    start.add_argument(
        "--min-requests", type=int, default=defaults.min_requests, help="candidate requests a step needs to be judged"
    )
    start.add_argument("--tolerance", type=float, default=0.005, help="blue-green: the gate's allowed accuracy drop")
    start.add_argument("-n", "--images", type=int, default=2_000, help="blue-green: test images per version")
    return parser.parse_args(argv)


def blue_green(args: argparse.Namespace, client: object, name: str, version: str, endpoints: EndpointSettings) -> int:
    mnist = MnistSettings()
    images, labels = load_test_set(mnist.root, download=mnist.download, limit=args.images)
    registry.promote(client, name, version, "staging")  # type: ignore[arg-type]
    decision = gate_and_promote(
        client,  # type: ignore[arg-type]
        name,
        version,
        staging_url=endpoints.staging_url,
        production_url=endpoints.serving_url,
        images=images.numpy(),
        labels=labels.numpy(),
        tolerance=args.tolerance,
    )
    print(f"blue-green: {'promoted' if decision.promoted else 'rejected'}: {decision.reason}")
    return 0 if decision.promoted else 1


def rollout_endpoints(settings: RolloutSettings, endpoints: EndpointSettings) -> Endpoints:
    """Where a canary acts, from the settings; the controller serves its /metrics on settings.metrics_address
    once it holds the router's lease."""
    return Endpoints(
        RouterAdmin(settings.router_admin_url),
        PrometheusQuery(settings.prometheus_url),
        production_url=endpoints.serving_url,
        candidate_url=endpoints.staging_url,
        metrics_address=settings.metrics_address,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        settings, endpoints, tracking = RolloutSettings(), EndpointSettings(), TrackingClientSettings()
        thresholds = Thresholds(args.max_error_rate, args.max_p99_ratio, args.max_accuracy_drop, args.min_requests)
    except (ValidationError, ValueError) as err:
        print(f"invalid rollout settings: {err}", file=sys.stderr)
        return 2
    client = connect(tracking, notice=on_stderr)
    name = ModelReference().name
    try:
        version = registry.resolve_version(client, name, args.version)
        if args.strategy == "blue-green":
            return blue_green(args, client, name, version, endpoints)
        plan = Plan(name, version, args.steps, args.interval, thresholds)
        at = rollout_endpoints(settings, endpoints)
        if args.strategy == "shadow":
            print(f"shadow of {name} version {version}: {args.shadow_percent:g} % mirrored for {args.interval:g} s")
            outcome = Shadow(client, plan, at, shadow_percent=args.shadow_percent, promote=args.promote).run()
        else:
            steps = ", ".join(f"{step:g}" for step in args.steps)
            print(f"canary of {name} version {version}: steps {steps} %, {args.interval:g} s each")
            outcome = Canary(client, plan, at).run()
    except (RolloutError, RouterBusy, registry.RegistryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (RouterUnavailable, PrometheusUnavailable, InferenceError) as err:
        print(f"error: {err}\nAll traffic is on production.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: all traffic is on production; the registry is unchanged", file=sys.stderr)
        return 130
    print(f"{outcome.word.upper()}: {outcome.reason} (MLflow run {outcome.run_id}, experiment rollouts)")
    return 0 if outcome.promoted or outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
