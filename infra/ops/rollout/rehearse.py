"""Rollout rehearsals: one command per scenario, each printing a timeline and a verdict.

    python -m infra.ops.rollout.rehearse good|schema|worse|slower|shadow [--interval 15s] [--rate 40]

Each scenario makes a candidate version (candidates.py), sends live MNIST traffic that knows its labels
through the router over REST and gRPC at once (services/traffic), rolls the candidate out as a canary
(controller.py), and checks that the rollout behaved as production's would:

    good    every step passes, @production moves, and not one request fails
    schema  a candidate that refuses the clients' input is aborted at its first step; the requests it failed
            are at most that step's share of one interval's traffic; production is unchanged
    worse   aborted on online accuracy
    slower  aborted on p99 latency
    shadow  the less accurate candidate, as a shadow of production: the comparison on mirrored traffic finds
            it worse (online accuracy), while every client answer came from production, with none failed

It needs the local stack's router and Prometheus, and uses the traffic generators' metrics ports
(SANDBOX_REHEARSAL_REST_TRAFFIC_METRICS, SANDBOX_REHEARSAL_GRPC_TRAFFIC_METRICS: 8075 and 8077) that
Prometheus scrapes. Exit status 0 when the scenario behaved as expected, 1 when it did not or could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from infra.ops.rollout import candidates
from infra.ops.rollout.__main__ import percents, rollout_endpoints, seconds
from infra.ops.rollout.analysis import Thresholds
from infra.ops.rollout.controller import Canary, Outcome, Plan
from infra.ops.rollout.settings import RolloutSettings
from infra.ops.rollout.shadow import Shadow
from mlops_sandbox import registry
from mlops_sandbox.processes import stop_on_sigterm
from mlops_sandbox.settings import (
    EndpointSettings,
    ModelReference,
    TrackingClientSettings,
    bindable,
    command_name,
    split_host_port,
)
from mlops_sandbox.tracking import connect
from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, on_stderr, wait_for

EXPECTED = {
    "good": "promoted",
    "schema": "error rate",
    "worse": "online accuracy",
    "slower": "p99",
    "shadow": "online accuracy",
}
"""What each scenario must end with: promoted, or aborted with a reason that starts with this."""
SCENARIOS = tuple(EXPECTED)
CANDIDATE_KIND = {"shadow": "worse"}
"""The candidate a scenario rolls out, when it is not the scenario's own name (candidates.py)."""
FAILED_OUTCOMES = ("client_error", "server_error", "transport_error")
PROTOCOLS = ("rest", "grpc")
"""The rehearsal's traffic: one generator per V2 protocol, through the router (traffic()); each must send."""


@dataclass(frozen=True)
class Traffic:
    """The traffic summaries of one rehearsal (services/traffic's --summary-json), one per protocol."""

    summaries: dict[str, dict[str, Any]]

    def failed(self, backend: str | None = None) -> int:
        """Requests that got no answer or an error, over both protocols (for one backend, or all)."""
        return sum(
            sum(entry["requests"][outcome] for outcome in FAILED_OUTCOMES)
            for summary in self.summaries.values()
            for entry in summary["backends"]
            if backend is None or entry["backend"] == backend
        )

    def answered_by(self) -> set[tuple[str, str]]:
        """The (backend, model_version) pairs that answered at least one request, over both protocols."""
        return {
            (entry["backend"], entry["model_version"])
            for summary in self.summaries.values()
            for entry in summary["backends"]
            if entry["requests"].get("ok", 0) > 0
        }

    def sent(self) -> int:
        """Requests sent over both protocols."""
        return sum(summary["sent"] for summary in self.summaries.values())


@contextmanager
def traffic(settings: RolloutSettings, rate: float, seconds_: float, folder: Path) -> Iterator[dict[str, Path]]:
    """Run one traffic generator per protocol through the router until the block ends; yield the paths where
    each writes its summary when it is stopped (SIGTERM)."""
    targets = {
        "rest": (settings.router_url, settings.rest_traffic_metrics),
        "grpc": (settings.router_grpc_target, settings.grpc_traffic_metrics),
    }
    assert tuple(targets) == PROTOCOLS  # check() expects each of them to have sent
    processes: list[subprocess.Popen[bytes]] = []
    paths: dict[str, Path] = {}
    try:
        for protocol, (target, metrics) in targets.items():
            paths[protocol] = folder / f"traffic-{protocol}.json"
            env = dict(
                os.environ,
                SANDBOX_TRAFFIC_TARGET=target,
                SANDBOX_TRAFFIC_PROTOCOL=protocol,
                SANDBOX_TRAFFIC_RATE=f"{rate / len(targets):g}",
                SANDBOX_TRAFFIC_DURATION_SECONDS=f"{seconds_:g}",
                SANDBOX_TRAFFIC_METRICS_ADDRESS=metrics,
                SANDBOX_TRAFFIC_SEED=str(len(processes)),
            )
            log = open(folder / f"traffic-{protocol}.log", "wb")  # noqa: SIM115 - the child keeps it
            argv = [sys.executable, "-m", "services.traffic.entrypoint", "--summary-json", str(paths[protocol])]
            processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
        for process, (protocol, (_, metrics)) in zip(processes, targets.items(), strict=True):
            wait_until_sending(f"http://{metrics}/metrics", protocol, folder / f"traffic-{protocol}.log", process)
        yield paths
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)


def wait_until_sending(
    metrics_url: str, protocol: str, log: Path, process: subprocess.Popen[bytes], timeout: float = 120.0
) -> None:
    """Wait until the generator `process` at `metrics_url` has had answers, so that the rollout starts on live
    traffic rather than on a generator still loading its images. DependencyUnavailable after `timeout` seconds,
    or at once, with its log's last line, when the generator has exited."""

    def answered() -> None:
        if (code := process.poll()) is not None:
            lines = log.read_text(errors="replace").strip().splitlines() or ["(empty)"]
            raise DependencyUnavailable(f"the {protocol} traffic generator exited ({code}): {lines[-1]}")
        text = requests.get(metrics_url, timeout=5).text
        if not any(
            line.startswith("sandbox_traffic_requests_total{") and not line.endswith(" 0.0")
            for line in text.splitlines()
        ):
            raise NotReadyYet("no answer yet")

    wait_for(
        answered, service=f"the {protocol} traffic generator", address=metrics_url, timeout=timeout, hint=f"log: {log}"
    )


def check(kind: str, outcome: Outcome, traffic_: Traffic, plan: Plan, rate: float, production_now: str) -> list[str]:
    """The scenario's expectations that `outcome` and the traffic did not meet (empty: all met)."""
    if missing := [protocol for protocol in PROTOCOLS if not traffic_.summaries.get(protocol, {}).get("sent")]:
        return [f"the rehearsal's own {' and '.join(missing)} traffic sent nothing: no verdict on its answers"]
    problems = []
    if kind == "good":
        if not outcome.promoted:
            problems.append(f"the good candidate was aborted: {outcome.reason}")
        if traffic_.failed():
            problems.append(f"{traffic_.failed()} requests failed during the rollout (expected 0)")
        if production_now != plan.candidate:
            problems.append(f"@production is version {production_now}, not the candidate {plan.candidate}")
        return problems
    if outcome.promoted or outcome.passed:
        return [f"the {kind} candidate was {outcome.word}"]
    if not outcome.reason.startswith(EXPECTED[kind]) and EXPECTED[kind] not in outcome.reason:
        problems.append(f"aborted for another reason than {EXPECTED[kind]}: {outcome.reason}")
    if production_now != outcome.production_before:
        problems.append(f"@production moved to {production_now} although the rollout was aborted")
    if kind == "shadow":
        if traffic_.failed():
            problems.append(f"{traffic_.failed()} requests failed during the shadow (expected 0)")
        if traffic_.answered_by() != {("production", outcome.production_before)}:
            problems.append(f"clients were answered by {sorted(traffic_.answered_by())}, not by production alone")
    if kind == "schema":
        if outcome.steps_passed != 0:
            problems.append(f"aborted after step {outcome.steps_passed + 1}, not at the first")
        bound = plan.steps[0] / 100 * rate * plan.interval
        if traffic_.failed() > bound:
            problems.append(
                f"{traffic_.failed()} failed requests > {bound:.0f}, the first step's share of one interval"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_name("infra.ops.rollout.rehearse"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--interval", type=seconds, default="15s", help="each step's length (15s, 1m)")
    parser.add_argument("--steps", type=percents, default="10,50,100", help="%% of traffic per step")
    parser.add_argument("--rate", type=float, default=40.0, help="requests/s, half over REST, half over gRPC")
    parser.add_argument(
        "--max-p99-ratio", type=float, default=Thresholds().max_p99_ratio, help="candidate p99 / production p99"
    )
    args = parser.parse_args(argv)
    stop_on_sigterm()

    settings, endpoints = RolloutSettings(), EndpointSettings()
    # Before the candidate is trained: a generator of the user's own on these ports would answer the readiness
    # probe and feed the rollout, while the rehearsal's own could not start and its verdict would count nothing.
    metrics = (settings.rest_traffic_metrics, settings.grpc_traffic_metrics)
    if held := [address for address in metrics if not bindable(*split_host_port(address))]:
        print(
            f"error: something listens on {' and '.join(held)}, where the rehearsal's traffic generators serve their "
            "metrics (SANDBOX_REHEARSAL_REST_TRAFFIC_METRICS, SANDBOX_REHEARSAL_GRPC_TRAFFIC_METRICS): a `sandbox "
            "traffic` of your own? A rehearsal runs its own; stop the other first.",
            file=sys.stderr,
        )
        return 1
    try:
        return rehearse(args, settings, endpoints)
    except DependencyUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def rehearse(args: argparse.Namespace, settings: RolloutSettings, endpoints: EndpointSettings) -> int:
    """Make the candidate, roll it out on the rehearsal's own traffic, print the verdict; 0 when the scenario
    behaved as expected, 1 when not. DependencyUnavailable when a server or a traffic generator is not there."""
    client = connect(TrackingClientSettings(), notice=on_stderr)
    name = ModelReference().name
    print(f"rehearsal '{args.scenario}': making the candidate", flush=True)
    candidate = candidates.make(CANDIDATE_KIND.get(args.scenario, args.scenario), client, name)
    print(f"candidate: {name} version {candidate}", flush=True)
    # The slower candidate's 87 M parameters get one short epoch: at 37 M, its online accuracy came out 0.76
    # against production's 0.90 in one CI run, which aborted it at 10 %, before p99 had the answers to be judged. The
    # scenario rehearses the latency rule, so it alone lets accuracy pass.
    limits = Thresholds(
        max_p99_ratio=args.max_p99_ratio,
        max_accuracy_drop=1.0 if args.scenario == "slower" else Thresholds().max_accuracy_drop,
    )
    plan = Plan(name, candidate, args.steps, args.interval, limits)
    at = rollout_endpoints(settings, endpoints)
    budget = len(plan.steps) * plan.interval + 300  # the generators outlive any rollout; stopped at its end
    with tempfile.TemporaryDirectory() as tmp:
        with traffic(settings, args.rate, budget, Path(tmp)) as paths:
            rollout = Shadow(client, plan, at) if args.scenario == "shadow" else Canary(client, plan, at)
            outcome = rollout.run()
        # Each generator writes its summary when it is stopped, at the end of the block above.
        summaries = {protocol: json.loads(path.read_text()) for protocol, path in paths.items() if path.exists()}
    traffic_ = Traffic(summaries)
    production_now = registry.resolve_version(client, name, "@production")
    for protocol, summary in summaries.items():
        print(
            f"traffic ({protocol}): {summary['sent']} sent, failed by backend: "
            + ", ".join(
                f"{e['backend']} v{e['model_version'] or '?'} {sum(e['requests'][o] for o in FAILED_OUTCOMES)}"
                for e in summary["backends"]
            )
        )
    problems = check(args.scenario, outcome, traffic_, plan, args.rate, production_now)
    verdict = "as expected" if not problems else "NOT as expected: " + "; ".join(problems)
    print(
        f"rehearsal '{args.scenario}': {outcome.word} ({outcome.reason}); "
        f"{traffic_.sent()} requests, {traffic_.failed()} failed; {verdict}"
    )
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
