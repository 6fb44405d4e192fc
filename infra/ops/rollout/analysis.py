"""A rollout step's verdict: the candidate's live metrics against thresholds and against production's.

Pure functions over what Prometheus measured during one step (metrics.py gathers it), so that every rule
has a unit test. The rules are those of Flagger's and Argo Rollouts' canary analysis: a request success
rate, a latency percentile, and here the online accuracy that labelled traffic makes measurable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import binomtest, chi2_contingency, norm

FALSE_ABORT_RATE = 0.05
"""How often a rollout may blame an accuracy drop on a candidate as accurate as production (one-sided 5 %):
the accuracy test's significance level over a whole rollout, shared by its looks (`accuracy_z`)."""
FAILURES_TO_ABORT_EARLY = 3
"""Failed requests the candidate must have before a step is cut short on errors: one or two may be bad luck."""
P99_MIN_ANSWERS = 100
"""Answers a backend needs in a step before its p99 means anything: with fewer, the 99th percentile is the
slowest one or two requests."""


@dataclass(frozen=True)
class Thresholds:
    """What a candidate must hold during every step."""

    max_error_rate: float = 0.01
    """Failed requests (4xx, 5xx, no answer) over all the candidate's requests: a fraction, 0.01 = 1 %."""
    max_p99_ratio: float = 2.0
    """The candidate's p99 latency over production's in the same step (a ratio: both share the machine).
    Two identical versions measured 0.7x to 1.5x on the project's 2-core machine with other work running, and
    once 4.2x with a training job and a second sandbox saturating both cores; the slower rehearsal's
    37 M-parameter network measured 1.7x to 4.7x, so its candidate now has 87 M (9.6x beside busy loops)."""
    max_accuracy_drop: float = 0.02
    """How far the candidate's online accuracy may fall below production's (absolute, 0.02 = 2 points); a larger
    drop aborts only when sampling noise does not explain it (`accuracy_z`)."""
    min_requests: int = 20
    """Requests sent to the candidate in a step (answered or not) before the step can pass: fewer judge nothing."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_error_rate <= 1 or not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError("max_error_rate and max_accuracy_drop are fractions between 0 and 1")
        if self.max_p99_ratio <= 0 or self.min_requests < 1:
            raise ValueError("max_p99_ratio must be > 0 and min_requests >= 1")


@dataclass(frozen=True)
class BackendStats:
    """One backend's traffic during a step, as the traffic's clients saw it."""

    requests: float
    """Requests sent to it (counts; Prometheus's increase() may give fractions)."""
    client_errors: float = 0.0
    """Requests it refused (REST 4xx, gRPC INVALID_ARGUMENT and the like)."""
    server_errors: float = 0.0
    """Requests it failed (5xx, gRPC INTERNAL/UNAVAILABLE) or that got no answer at all."""
    p99_seconds: float | None = None
    """The 99th percentile of request latency (seconds); None without answers."""
    correct: float = 0.0
    """Images it predicted rightly, since the rollout began (online accuracy needs every sample there is)."""
    labelled: float = 0.0
    """Images it predicted whose label is known, since the rollout began."""

    @property
    def answers(self) -> float:
        """Requests it answered without an error."""
        return self.requests - self.client_errors - self.server_errors

    @property
    def accuracy(self) -> float | None:
        """Correct over labelled predictions (a fraction); None without labelled answers."""
        return self.correct / self.labelled if self.labelled else None

    @property
    def error_rate(self) -> float:
        """Failed requests over requests (a fraction); 0 without requests."""
        return (self.client_errors + self.server_errors) / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Verdict:
    """A step's outcome: `passed` is True (go on), False (abort now) or None (not decided yet)."""

    passed: bool | None
    reason: str


def judge(
    candidate: BackendStats, production: BackendStats, limits: Thresholds, *, step_over: bool, looks: int = 1
) -> Verdict:
    """The verdict on a step so far (`step_over` False) or at its end (True), in a rollout that tests accuracy
    `looks` times (once per step).

    Errors abort at once, mid-step, as soon as they are evidence: FAILURES_TO_ABORT_EARLY failed requests and
    an error rate whose lower confidence bound (Wilson, one-sided 95 %) is above `max_error_rate`, so that a
    candidate that refuses every request loses its share within seconds, not at the end of the interval. At
    the end of the step, the error rate itself is compared. Latency is judged at the end of the step on the
    step's own answers, once both backends have P99_MIN_ANSWERS (so not at 100 %, where production answers
    nothing); accuracy on every labelled answer since the rollout began, with the confidence test of
    `drop_noise` at `accuracy_z(looks)`.
    """
    failures = candidate.client_errors + candidate.server_errors
    significant = failures >= FAILURES_TO_ABORT_EARLY and wilson_lower_bound(failures, candidate.requests) > (
        limits.max_error_rate
    )
    enough = candidate.requests >= limits.min_requests and step_over
    if candidate.error_rate > limits.max_error_rate and (significant or enough):
        return Verdict(
            False,
            f"error rate {candidate.error_rate:.1%} > {limits.max_error_rate:.1%} "
            f"({candidate.client_errors:.0f} refused, {candidate.server_errors:.0f} failed "
            f"of {candidate.requests:.0f} requests)",
        )
    if not step_over:
        return Verdict(None, "measuring")
    if candidate.requests < limits.min_requests:
        return Verdict(False, f"too little traffic to judge: {candidate.requests:.0f} < {limits.min_requests} requests")
    notes = [f"error rate {candidate.error_rate:.1%}"]
    if candidate.answers < P99_MIN_ANSWERS or production.answers < P99_MIN_ANSWERS:
        notes.append(
            f"p99 not judged: the candidate had {candidate.answers:.0f} answers in the step and production "
            f"{production.answers:.0f} (it needs {P99_MIN_ANSWERS} on each side)"
        )
    elif candidate.p99_seconds is not None and production.p99_seconds:
        ratio = candidate.p99_seconds / production.p99_seconds
        if ratio > limits.max_p99_ratio:
            return Verdict(
                False,
                f"p99 {candidate.p99_seconds * 1000:.1f} ms is {ratio:.2f}x production's "
                f"{production.p99_seconds * 1000:.1f} ms (> {limits.max_p99_ratio:g}x)",
            )
        notes.append(f"p99 {ratio:.2f}x production's")
    if candidate.accuracy is not None and production.accuracy is not None:
        drop = production.accuracy - candidate.accuracy
        if drop > limits.max_accuracy_drop and drop - limits.max_accuracy_drop > accuracy_z(looks) * drop_noise(
            candidate, production
        ):
            return Verdict(
                False,
                f"online accuracy {candidate.accuracy:.4f} is {drop:.4f} below production's "
                f"{production.accuracy:.4f} (> {limits.max_accuracy_drop:g}, on {candidate.labelled:.0f} and "
                f"{production.labelled:.0f} labelled images)",
            )
        notes.append(f"accuracy {candidate.accuracy:.4f} vs {production.accuracy:.4f}")
    else:
        notes.append("accuracy not judged: no labelled answers")
    return Verdict(True, ", ".join(notes))


def accuracy_z(looks: int) -> float:
    """The normal quantile an accuracy drop must exceed, in standard errors, when a rollout tests accuracy
    `looks` times on its growing sample: FALSE_ABORT_RATE / looks each (Bonferroni), since every look is another
    chance to abort a good candidate on bad luck. 1.645 for one look, 2.128 for the three steps of
    10, 50, 100 %. A compose smoke run aborted a candidate identical to production (same seed, 0.9002 test
    accuracy) at its first step on 47 of 60 images against 450 of 500: a 0.6 % draw at 1.645, within 2.128.
    ValueError for fewer than one look."""
    if looks < 1:
        raise ValueError(f"looks must be >= 1, not {looks}")
    return float(norm.ppf(1 - FALSE_ABORT_RATE / looks))


def drop_noise(candidate: BackendStats, production: BackendStats) -> float:
    """The standard error of the difference of two accuracies (a fraction): the normal approximation of two
    binomial proportions, each with one success and one failure added (Agresti-Caffo), so that a perfect
    score on a few images does not claim zero noise."""

    def variance(stats: BackendStats) -> float:
        p = (stats.correct + 1) / (stats.labelled + 2)
        return p * (1 - p) / (stats.labelled + 2)

    return math.sqrt(variance(candidate) + variance(production))


def wilson_lower_bound(hits: float, trials: float) -> float:
    """The lower end of Wilson's score interval for `hits` in `trials` at one-sided 95 % (a fraction; 0 without
    trials): the smallest rate that the observation does not rule out. SciPy's `binomtest(...).proportion_ci`
    computes it; counts from Prometheus are rounded to whole requests first."""
    n = round(trials)
    if n <= 0:
        return 0.0
    interval = binomtest(min(round(hits), n), n).proportion_ci(confidence_level=0.90, method="wilson")
    return float(interval.low)


def agreement(first: dict[str, float], second: dict[str, float]) -> float | None:
    """How alike two prediction distributions are: 1 minus their total variation distance, a fraction (1: the
    same share of every class; 0: no class in common). `first`, `second`: class -> count. None when either is
    empty. This compares distributions, not request by request: Prometheus keeps counts, not which answer each
    copy of one request got."""
    total_first, total_second = sum(first.values()), sum(second.values())
    if total_first <= 0 or total_second <= 0:
        return None
    classes = set(first) | set(second)
    distance = sum(abs(first.get(c, 0) / total_first - second.get(c, 0) / total_second) for c in classes) / 2
    return 1.0 - distance


def same_distribution_p_value(first: dict[str, float], second: dict[str, float]) -> float | None:
    """The p-value of Pearson's chi-squared test that both counts (class -> count) come from one distribution
    (SciPy's chi2_contingency on the 2 x classes table, counts rounded); None with fewer than two classes seen
    or an empty side. Small values: the candidate predicts classes in other proportions than production."""
    classes = sorted(c for c in set(first) | set(second) if round(first.get(c, 0)) + round(second.get(c, 0)) > 0)
    table = [[round(first.get(c, 0)) for c in classes], [round(second.get(c, 0)) for c in classes]]
    if len(classes) < 2 or not sum(table[0]) or not sum(table[1]):
        return None
    return float(chi2_contingency(table).pvalue)
