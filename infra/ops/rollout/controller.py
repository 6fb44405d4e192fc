"""A canary rollout: the candidate takes a growing share of live traffic through the router, each step is
judged on Prometheus's live metrics, and the registry moves only when every step passed.

    stage    @staging -> candidate; wait until the candidate endpoint serves it
    steps    for each weight: route that share to the candidate, measure for an interval, judge (analysis.py)
    promote  @production -> candidate; wait until the production endpoint serves it; weights back to 0
    abort    at the first failed judgement: weights back to 0 at once, the registry untouched, the
             candidate version tagged with the reason

The rollout is an MLflow run in the `rollouts` experiment (params: strategy and thresholds; metrics per
step; tags: outcome, reason, both versions), and the candidate version carries a tag naming that run, so
that every rollout a version went through can be found from its page in the registry.

Safety: the weights go back to 0 whatever ends the command (abort, exception, Ctrl+C, SIGTERM). A lease held
in the router's runtime (mlops_sandbox.router) covers what no handler can: if the command is killed, the
router's watchdog returns the traffic to production once the lease expires, and while the lease is live a
second rollout refuses to start.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from infra.ops.rollout.analysis import BackendStats, Thresholds, Verdict, judge
from infra.ops.rollout.chart import rollout_figure
from infra.ops.rollout.metrics import step_stats
from infra.ops.rollout.telemetry import CANDIDATE_WEIGHT, STEP_VERDICTS
from infra.ops.rollout.telemetry import serve as serve_metrics
from mlops_sandbox import registry
from mlops_sandbox.gate import wait_until_served
from mlops_sandbox.prometheus import PrometheusQuery, PrometheusUnavailable
from mlops_sandbox.router import RouterAdmin
from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, wait_for

EXPERIMENT = "rollouts"
ROLLOUTS_HEADING = "Rollouts:"
"""The line of a version's description under which each rollout's run is linked (Canary._link_run)."""
NO_TRAFFIC = BackendStats(requests=0.0)
OUTCOME_TAG, REASON_TAG = "rollout.outcome", "rollout.reason"
"""The candidate version's tags that say how its last rollout ended and why (Canary._tag_version)."""


def compared(candidate: BackendStats, production: BackendStats) -> dict[str, float | None]:
    """The figures a rollout records of both versions: the candidate's requests, error rate, p99 (seconds) and
    accuracy, production's p99 and accuracy (None where nothing was measured)."""
    return {
        "candidate_requests": candidate.requests,
        "candidate_error_rate": candidate.error_rate,
        "candidate_p99_seconds": candidate.p99_seconds,
        "candidate_accuracy": candidate.accuracy,
        "production_p99_seconds": production.p99_seconds,
        "production_accuracy": production.accuracy,
    }


def last_rejection(client: MlflowClient, name: str, version: str) -> str | None:
    """How the last rollout of `version` ended when it failed: "aborted: REASON" or "interrupted: REASON",
    from the tags each rollout leaves on the version (Canary._tag_version); None when its last rollout
    passed or it had none. Raises MlflowException when the version does not exist."""
    tags = client.get_model_version(name, version).tags or {}
    outcome = tags.get(OUTCOME_TAG)
    if outcome not in ("aborted", "interrupted"):
        return None
    return f"{outcome}: {tags.get(REASON_TAG, 'no reason recorded')}"


class RolloutError(RuntimeError):
    """A rollout that cannot start (another one runs, the candidate does not exist, is already production)."""


@dataclass(frozen=True)
class Plan:
    """What to roll out and how."""

    model_name: str
    candidate: str
    """The registry version to roll out."""
    steps: tuple[float, ...] = (10.0, 50.0, 100.0)
    """The candidate's share of traffic at each step, in percent, increasing, the last one 100."""
    interval: float = 30.0
    """Seconds each step lasts before it is judged."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    check_every: float = 1.0
    """Seconds between two looks at the metrics within a step (errors abort mid-step)."""

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < s <= 100 for s in self.steps) or list(self.steps) != sorted(self.steps):
            raise ValueError(f"steps must be increasing percentages in (0, 100]: {self.steps}")
        if self.interval <= 0 or self.check_every <= 0:
            raise ValueError("interval and check_every are positive seconds")


@dataclass
class Outcome:
    """How a rollout ended: `promoted`, or `aborted` with the reason; the MLflow run that recorded it."""

    promoted: bool
    reason: str
    run_id: str
    production_before: str
    steps_passed: int
    passed: bool | None = None
    """Whether the candidate passed its judgement; None: as `promoted` (a canary promotes what passes, a
    shadow only when asked to)."""

    @property
    def word(self) -> str:
        """promoted, passed (judged good, left on @staging) or aborted."""
        if self.promoted:
            return "promoted"
        return "passed" if self.passed else "aborted"


@dataclass
class Endpoints:
    """Where the rollout acts: the router's admin, Prometheus, and both serving endpoints (V2 REST URLs)."""

    router: RouterAdmin
    prometheus: PrometheusQuery
    production_url: str
    candidate_url: str
    metrics_address: str | None = None
    """host:port where the controller serves its own /metrics (telemetry.py) once it holds the router's lease,
    so that a rollout refused by the lease neither binds the port nor warns about it; None: not served."""


class Canary:
    """One canary rollout of `plan` through `endpoints`, recorded with `client` (see the module docstring)."""

    strategy = "canary"

    def __init__(
        self,
        client: MlflowClient,
        plan: Plan,
        endpoints: Endpoints,
        *,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        serve_timeout: float = 120.0,
    ) -> None:
        self.client, self.plan, self.at = client, plan, endpoints
        self.say, self.clock, self.sleep = say, clock, sleep
        self.serve_timeout = serve_timeout
        self.owner = f"rollout-{uuid.uuid4().hex[:12]}"
        self.began = self.rollout_began = clock()
        self.staging_before: str | None = None
        self.wall_began = time.time()

    def log(self, line: str) -> None:
        """One timeline line: seconds since the rollout began, then `line`."""
        self.say(f"{self.clock() - self.began:7.1f} s  {line}")

    def _lease_seconds(self) -> float:
        # Long enough to outlast one look at the metrics, short enough that a killed controller's weight is
        # withdrawn well within one step.
        return max(10.0, 3 * self.plan.check_every)

    def run(self) -> Outcome:
        """Run the rollout to its end. Raises RolloutError before any traffic moves when it cannot start."""
        name, candidate = self.plan.model_name, self.plan.candidate
        production = registry.resolve_version(self.client, name, "@production")
        if production == candidate:
            raise RolloutError(f"version {candidate} is already @production")
        self._preflight()
        rejected = last_rejection(self.client, name, candidate)
        if rejected:
            self.say(f"note: the last rollout of version {candidate} was {rejected}; it is rolled out again")
        self.staging_before = self._alias_target("staging")
        # The lease covers the wait for the candidate endpoint too (RouterBusy when another rollout runs); it is
        # shortened to the usual term when the first weight is set.
        self.at.router.acquire_lease(self.owner, self.serve_timeout + self._lease_seconds())
        if self.at.metrics_address and (note := serve_metrics(self.at.metrics_address)):
            self.say(note)
        self.rollout_began = self.clock()
        run_id = self._start_run(production)
        outcome: Outcome | None = None
        try:
            self.log(registry.promote(self.client, name, candidate, "staging").describe())
            took = wait_until_served(self.at.candidate_url, name, candidate, timeout=self.serve_timeout)
            self.log(f"the candidate endpoint serves version {candidate} ({took:.1f} s)")
            outcome = self._steps(run_id, production)
        finally:
            # Whatever ended the rollout: production takes all traffic again before anything else happens.
            self.at.router.reset()
            CANDIDATE_WEIGHT.labels(candidate).set(0)
            self.at.router.release_lease(self.owner)
            self._end_run(run_id, outcome)
        assert outcome is not None  # an exception would have left the block above
        return outcome

    def _steps(self, run_id: str, production: str) -> Outcome:
        for index, weight in enumerate(self.plan.steps):
            self.at.router.renew_lease(self.owner, self._lease_seconds())
            self.at.router.set_split(weight)
            CANDIDATE_WEIGHT.labels(self.plan.candidate).set(weight)
            self.log(
                f"step {index + 1}/{len(self.plan.steps)}: {weight:g} % of traffic to version {self.plan.candidate}"
            )
            verdict, candidate_stats, production_stats = self._measure()
            self._log_step(run_id, index, weight, candidate_stats, production_stats)
            STEP_VERDICTS.labels(self.plan.candidate, "passed" if verdict.passed else "failed").inc()
            self.log(f"step {index + 1}: {'passed' if verdict.passed else 'FAILED'}: {verdict.reason}")
            if not verdict.passed:
                return self._abort(run_id, production, index, verdict.reason)
        return self._promote(run_id, production)

    def _measure(self) -> tuple[Verdict, BackendStats, BackendStats]:
        """Look at the step's metrics every check_every seconds until the step is judged: the verdict, the
        candidate's and production's figures."""
        began = self.clock()
        while True:
            self.sleep(self.plan.check_every)
            self.at.router.renew_lease(self.owner, self._lease_seconds())
            elapsed = self.clock() - began
            stats = step_stats(self.at.prometheus, elapsed, self.clock() - self.rollout_began)
            candidate = stats.get("candidate", NO_TRAFFIC)
            production = stats.get("production", NO_TRAFFIC)
            # Latency is compared within the step, where both versions share the machine and its load. At
            # 100 % production answers nothing, so p99 is not judged there: compared with production's p99 of
            # the step before, taken at another time and half the load, a good candidate measured 2.04x in a
            # CI run whose machine other tests shared, and was aborted. Accuracy counts every labelled answer
            # since the rollout began, production's included, so it is judged at 100 % too.
            verdict = judge(
                candidate,
                production,
                self.plan.thresholds,
                step_over=elapsed >= self.plan.interval,
                looks=len(self.plan.steps),
            )
            if verdict.passed is not None:
                return verdict, candidate, production

    def _promote(self, run_id: str, production: str) -> Outcome:
        name, candidate = self.plan.model_name, self.plan.candidate
        # The lease covers the wait below: the candidate endpoint keeps its share until production serves the
        # candidate too, so that no request meets an endpoint in the middle of a switch.
        self.at.router.renew_lease(self.owner, self.serve_timeout + self._lease_seconds())
        self.log(registry.promote(self.client, name, candidate, "production").describe())
        took = wait_until_served(self.at.production_url, name, candidate, timeout=self.serve_timeout)
        self.at.router.reset()
        self.log(f"the production endpoint serves version {candidate} ({took:.1f} s); all traffic back on it")
        reason = f"all {len(self.plan.steps)} steps passed"
        self._tag_version(run_id, "promoted", reason)
        return Outcome(True, reason, run_id, production, len(self.plan.steps))

    def _abort(self, run_id: str, production: str, index: int, reason: str) -> Outcome:
        self.at.router.reset()
        self._restore_staging()
        self.log(f"ABORTED: all traffic back on version {production}; @production unchanged")
        self._tag_version(run_id, "aborted", reason)
        return Outcome(False, reason, run_id, production, index)

    def _preflight(self) -> None:
        """RolloutError, before anything moves, when the rollout could not be judged: Prometheus down, or no
        traffic through the router that knows its labels (services/traffic)."""
        if not self.at.prometheus.ready():
            raise RolloutError(
                f"Prometheus does not answer at {self.at.prometheus.url} (SANDBOX_PROMETHEUS_URL); in the local "
                "stack it needs Debian's prometheus package: apt-get install prometheus, then bash infra/sandbox.sh"
            )
        self.at.router.split()  # RouterUnavailable, naming the admin URL, when the router does not answer
        routed = 'sum(last_over_time(sandbox_traffic_requests_total{backend=~"production|candidate"}[30s]))'

        def traffic_seen() -> None:
            if sum(self.at.prometheus.vector(routed, by="").values()) <= 0:
                raise NotReadyYet("no routed traffic in Prometheus yet")

        try:
            # A few scrapes: a generator started just before the rollout is not in Prometheus at once.
            wait_for(
                traffic_seen,
                service="routed traffic",
                address=self.at.prometheus.url,
                timeout=15,
                interval=1,
                notice=self.say,
            )
        except DependencyUnavailable:
            raise RolloutError(
                "no traffic went through the router in the last 30 s: a canary is judged on live traffic that "
                "knows its labels; start a traffic generator through the router first (docs/operations.md, "
                "'Traffic for your own rollout')"
            ) from None

    def _alias_target(self, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.plan.model_name, alias).version)
        except MlflowException:
            return None

    def _restore_staging(self) -> None:
        """Point @staging back where it was before the rollout, so that a later `promote @staging` cannot
        promote the rejected candidate by mistake, and archive the candidate. Only the alias moves: the
        version it returns to may be production by now, whose stage stays Production; one archived meanwhile
        is left for production's (registry.settle_staging)."""
        name, candidate, previous = self.plan.model_name, self.plan.candidate, self.staging_before
        if previous and previous != candidate:
            self.client.set_registered_model_alias(name, "staging", previous)
            self.log(f"@staging back on version {previous}")
        if self._alias_target("production") == candidate:  # interrupted after the promotion itself
            self.log(f"version {candidate} is @production already: not archived")
            return
        # Archiving also moves @staging off the candidate when it had nowhere to go back to (registry.archive).
        registry.archive(self.client, name, candidate)

    # -- the record in MLflow --------------------------------------------------------------------------

    def _start_run(self, production: str) -> str:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
        plan, limits = self.plan, self.plan.thresholds
        run = self.client.create_run(
            experiment_id,
            run_name=f"{self.strategy} {plan.model_name} v{plan.candidate} vs v{production}",
            tags={
                "sandbox.rollout.strategy": self.strategy,
                "sandbox.rollout.model_name": plan.model_name,
                "sandbox.rollout.candidate_version": plan.candidate,
                "sandbox.rollout.production_version": production,
                "sandbox.rollout.outcome": "running",
            },
        )
        params = {
            "strategy": self.strategy,
            **self._plan_params(),
            "interval_seconds": f"{plan.interval:g}",
            "max_error_rate": f"{limits.max_error_rate:g}",
            "max_p99_ratio": f"{limits.max_p99_ratio:g}",
            "max_accuracy_drop": f"{limits.max_accuracy_drop:g}",
            "min_requests": str(limits.min_requests),
        }
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        self._tag_version(run.info.run_id, "running", "")
        self._link_run(experiment_id, run.info.run_id, production)
        return run.info.run_id

    def _link_run(self, experiment_id: str, run_id: str, production: str) -> None:
        """Append a link to the rollout's run to the candidate version's description, which the registry's page
        renders as Markdown: from the version, one click opens each rollout it went through. The link is
        relative to the UI's own address (its routes live after `#`), so it works under any host name."""
        name, candidate = self.plan.model_name, self.plan.candidate
        version = self.client.get_model_version(name, candidate)
        description = (version.description or "").rstrip()
        if ROLLOUTS_HEADING not in description:
            description = f"{description}\n\n{ROLLOUTS_HEADING}" if description else ROLLOUTS_HEADING
        url = f"#/experiments/{experiment_id}/runs/{run_id}"
        line = f"- [{self.strategy} against version {production}, {registry.now()}]({url})"
        self.client.update_model_version(name, candidate, description=f"{description}\n{line}")

    def _plan_params(self) -> dict[str, str]:
        """The MLflow params that say how traffic moved."""
        return {"steps": ",".join(f"{s:g}" for s in self.plan.steps)}

    def _log_step(
        self, run_id: str, index: int, weight: float, candidate: BackendStats, production: BackendStats
    ) -> None:
        self._log_figures(run_id, index, {"candidate_weight_percent": weight, **compared(candidate, production)})

    def _log_figures(self, run_id: str, step: int, figures: dict[str, float | None]) -> None:
        """One MLflow metric point per figure at `step`, stamped now; figures without a value are left out."""
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, step) for k, v in figures.items() if v is not None]
        self.client.log_batch(run_id, metrics=metrics)

    def _tag_version(self, run_id: str, outcome: str, reason: str) -> None:
        name, candidate = self.plan.model_name, self.plan.candidate
        if outcome != "running":
            self.client.set_model_version_tag(name, candidate, OUTCOME_TAG, outcome)
            self.client.set_model_version_tag(name, candidate, REASON_TAG, reason)
        # One tag per rollout, keyed by its run: every rollout the version went through stays listed.
        self.client.set_model_version_tag(name, candidate, f"rollout.run.{run_id}", f"{outcome} at {registry.now()}")

    def _end_run(self, run_id: str, outcome: Outcome | None) -> None:
        if outcome is None:
            tags = {"sandbox.rollout.outcome": "interrupted", "sandbox.rollout.reason": "the controller stopped"}
            status = "KILLED"
            self._tag_version(run_id, "interrupted", "the controller stopped before the rollout ended")
            self._restore_staging()
        else:
            tags = {"sandbox.rollout.outcome": outcome.word, "sandbox.rollout.reason": outcome.reason}
            status = "FINISHED"
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self._log_chart(run_id)
        self.client.set_terminated(run_id, status)

    def _log_chart(self, run_id: str) -> None:
        """The rollout's picture (chart.py) as the run's plots/rollout.png; a note instead when Prometheus or
        the artifact store cannot give it: the rollout's outcome does not depend on its picture."""
        # One scrape interval, so that the picture ends with the weight back at 0.
        self.sleep(2.5)
        title = f"{self.strategy} of {self.plan.model_name} version {self.plan.candidate}"
        try:
            figure = rollout_figure(self.at.prometheus, self.wall_began, time.time(), title)
            self.client.log_figure(run_id, figure, "plots/rollout.png")
        except (PrometheusUnavailable, MlflowException, OSError) as err:
            self.log(f"no chart of the rollout: {err}")
