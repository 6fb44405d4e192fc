"""A shadow rollout: production answers every request, the candidate endpoint gets a mirrored copy of a share
of them, and the two versions are compared on the same traffic without a client ever seeing the candidate.

    stage    @staging -> candidate; wait until the candidate endpoint serves it (as a canary does)
    mirror   the router copies `shadow_percent` of production's requests to the candidate (Envoy's request
             mirroring: the copy's answer is dropped), for one interval, judged on what both endpoints counted
    verdict  the canary's rules (analysis.judge): the candidate's error rate, its p99 against production's, its
             online accuracy against production's on the same images; plus, reported, how alike the two
             versions' predicted digits are (analysis.agreement) and a chi-squared test of the same
    end      passed: @staging stays on the candidate, ready for a canary, or, with `promote`, @production moves
             as a canary's does; failed: @staging goes back and the candidate is archived, as after an abort

Both copies are counted where they arrive, on the serving endpoints' own counters (metrics.shadow_stats), since
no client sees the candidate's answers. Recorded in MLflow as a canary is (controller.py), strategy `shadow`.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.ops.rollout.analysis import BackendStats, Verdict, agreement, judge, same_distribution_p_value
from infra.ops.rollout.controller import NO_TRAFFIC, Canary, Outcome, compared
from infra.ops.rollout.metrics import shadow_stats
from infra.ops.rollout.telemetry import SHADOW_PERCENT, STEP_VERDICTS


@dataclass(frozen=True)
class Comparison:
    """Both versions on the same mirrored traffic: their stats, and how alike their predicted digits are."""

    candidate: BackendStats
    production: BackendStats
    agreement: float | None
    """1 - total variation distance of the two predicted-digit distributions (a fraction)."""
    p_value: float | None
    """Chi-squared test that both versions predict digits in the same proportions."""

    def describe(self) -> str:
        """One line: requests, accuracies, agreement, errors, latency."""

        def share(value: float | None, digits: int = 4) -> str:
            return "n/a" if value is None else f"{value:.{digits}f}"

        p99 = [s.p99_seconds for s in (self.candidate, self.production)]
        latency = f"p99 {p99[0] * 1000:.1f} vs {p99[1] * 1000:.1f} ms" if None not in p99 else "p99 n/a"  # type: ignore[operator]
        return (
            f"{self.candidate.requests:.0f} mirrored requests; online accuracy {share(self.candidate.accuracy)} "
            f"vs production's {share(self.production.accuracy)} (on {self.candidate.labelled:.0f} and "
            f"{self.production.labelled:.0f} labelled images); predicted-digit agreement {share(self.agreement)} "
            f"(chi-squared p = {share(self.p_value, 3)}); error rate {self.candidate.error_rate:.1%}; {latency}"
        )


class Shadow(Canary):
    """One shadow rollout of `plan` (its `interval` is how long the shadow lasts; its steps are not used)
    through `endpoints`; see the module docstring. `shadow_percent`: the share of production's requests
    copied to the candidate, in (0, 100]. `promote`: move @production when the candidate passes."""

    strategy = "shadow"

    def __init__(self, *args: object, shadow_percent: float = 100.0, promote: bool = False, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if not 0 < shadow_percent <= 100:
            raise ValueError(f"shadow_percent must be in (0, 100]: {shadow_percent}")
        self.shadow_percent, self.promote = shadow_percent, promote

    def _plan_params(self) -> dict[str, str]:
        return {"shadow_percent": f"{self.shadow_percent:g}", "promote": str(self.promote).lower()}

    def _steps(self, run_id: str, production: str) -> Outcome:
        candidate = self.plan.candidate
        self.at.router.renew_lease(self.owner, self._lease_seconds())
        self.at.router.set_split(0, self.shadow_percent)
        SHADOW_PERCENT.labels(candidate).set(self.shadow_percent)
        self.log(
            f"shadow: {self.shadow_percent:g} % of production's requests copied to version {candidate} for "
            f"{self.plan.interval:g} s; clients get production's answers only"
        )
        try:
            verdict, comparison = self._compare({"production": production, "candidate": candidate})
        finally:
            self.at.router.reset()
            SHADOW_PERCENT.labels(candidate).set(0)
        self.log(f"shadow: {comparison.describe()}")
        self._log_comparison(run_id, comparison)
        STEP_VERDICTS.labels(candidate, "passed" if verdict.passed else "failed").inc()
        self.log(f"shadow: {'passed' if verdict.passed else 'FAILED'}: {verdict.reason}")
        if not verdict.passed:
            return self._abort(run_id, production, 0, verdict.reason)
        if self.promote:
            return self._promote(run_id, production)
        reason = f"passed the shadow: {verdict.reason}"
        self.log(f"@staging stays on version {candidate}; @production unchanged (promote with --promote or a canary)")
        self._tag_version(run_id, "passed", reason)
        return Outcome(False, reason, run_id, production, 1, passed=True)

    def _compare(self, versions: dict[str, str]) -> tuple[Verdict, Comparison]:
        """Look at both versions' counters every check_every seconds until the shadow is judged."""
        began = self.clock()
        while True:
            self.sleep(self.plan.check_every)
            self.at.router.renew_lease(self.owner, self._lease_seconds())
            elapsed = self.clock() - began
            stats, digits = shadow_stats(self.at.prometheus, versions, max(1.0, elapsed))
            candidate, production = stats.get("candidate", NO_TRAFFIC), stats.get("production", NO_TRAFFIC)
            verdict = judge(candidate, production, self.plan.thresholds, step_over=elapsed >= self.plan.interval)
            if verdict.passed is not None:
                comparison = Comparison(
                    candidate,
                    production,
                    agreement(digits.get("candidate", {}), digits.get("production", {})),
                    same_distribution_p_value(digits.get("candidate", {}), digits.get("production", {})),
                )
                return verdict, comparison

    def _log_comparison(self, run_id: str, comparison: Comparison) -> None:
        figures = {
            "shadow_percent": self.shadow_percent,
            **compared(comparison.candidate, comparison.production),
            "prediction_agreement": comparison.agreement,
            "same_distribution_p_value": comparison.p_value,
        }
        self._log_figures(run_id, 0, figures)
