"""The verdict on a rollout step (infra/ops/rollout/analysis.py), rule by rule, boundaries included."""

from __future__ import annotations

import pytest

from infra.ops.rollout.analysis import (
    P99_MIN_ANSWERS,
    BackendStats,
    Thresholds,
    accuracy_z,
    agreement,
    drop_noise,
    judge,
    same_distribution_p_value,
    wilson_lower_bound,
)

LIMITS = Thresholds(max_error_rate=0.01, max_p99_ratio=1.5, max_accuracy_drop=0.02, min_requests=20)
PRODUCTION = BackendStats(requests=900, p99_seconds=0.010, correct=8820, labelled=9000)  # 0.98
HEALTHY = BackendStats(requests=200, p99_seconds=0.011, correct=1950, labelled=2000)  # 0.975


def test_a_healthy_candidate_passes_at_the_end_of_its_step_and_not_before() -> None:
    assert judge(HEALTHY, PRODUCTION, LIMITS, step_over=False).passed is None
    verdict = judge(HEALTHY, PRODUCTION, LIMITS, step_over=True)
    assert verdict.passed is True
    assert "accuracy 0.9750 vs 0.9800" in verdict.reason and "p99 1.10x" in verdict.reason


def test_errors_abort_mid_step_as_soon_as_they_are_evidence() -> None:
    refusing = BackendStats(requests=3, client_errors=3)
    verdict = judge(refusing, PRODUCTION, LIMITS, step_over=False)
    assert verdict.passed is False
    assert "error rate 100.0% > 1.0%" in verdict.reason and "3 refused" in verdict.reason
    # Two failures may be bad luck; three in 400 (0.75 %) are within the 1 % allowed.
    assert judge(BackendStats(requests=2, server_errors=2), PRODUCTION, LIMITS, step_over=False).passed is None
    assert judge(BackendStats(requests=400, server_errors=3), PRODUCTION, LIMITS, step_over=False).passed is None
    # 3 in 200 is above 1 %, but not surely: the step goes on, and its end decides.
    assert wilson_lower_bound(3, 200) < 0.01
    assert judge(BackendStats(requests=200, server_errors=3), PRODUCTION, LIMITS, step_over=False).passed is None
    assert judge(BackendStats(requests=200, server_errors=3), PRODUCTION, LIMITS, step_over=True).passed is False


def test_the_wilson_bound_matches_the_formula() -> None:
    # Wilson (1927): (p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.645; 10 of 100 gives 0.0607.
    assert abs(wilson_lower_bound(10, 100) - 0.06072) < 0.00005
    assert wilson_lower_bound(0, 50) == 0.0 and wilson_lower_bound(0, 0) == 0.0


def test_the_error_rate_boundary_is_allowed() -> None:
    at_limit = BackendStats(requests=100, server_errors=1)
    assert judge(at_limit, PRODUCTION, LIMITS, step_over=True).passed is True
    above = BackendStats(requests=100, server_errors=2)
    assert judge(above, PRODUCTION, LIMITS, step_over=True).passed is False


def test_a_slower_candidate_fails_on_p99_relative_to_production() -> None:
    slow = BackendStats(requests=200, p99_seconds=0.016)
    verdict = judge(slow, PRODUCTION, LIMITS, step_over=True)
    assert verdict.passed is False
    assert "p99 16.0 ms is 1.60x production's 10.0 ms" in verdict.reason
    assert judge(BackendStats(requests=200, p99_seconds=0.015), PRODUCTION, LIMITS, step_over=True).passed


def test_p99_is_not_judged_on_fewer_answers_than_a_99th_percentile_needs() -> None:
    few = BackendStats(requests=P99_MIN_ANSWERS - 1, p99_seconds=0.1)
    verdict = judge(few, PRODUCTION, LIMITS, step_over=True)
    assert verdict.passed is True and "p99 not judged" in verdict.reason
    enough = BackendStats(requests=P99_MIN_ANSWERS, p99_seconds=0.1)
    assert judge(enough, PRODUCTION, LIMITS, step_over=True).passed is False


def test_at_100_percent_p99_is_not_judged_but_accuracy_since_the_rollout_began_is() -> None:
    # Production answers nothing in the step; its labelled answers of the earlier steps still count.
    idle = BackendStats(requests=0, correct=980, labelled=1000)
    slow = BackendStats(requests=600, p99_seconds=0.1, correct=1170, labelled=1200)  # 0.975
    verdict = judge(slow, idle, LIMITS, step_over=True)
    assert verdict.passed is True
    assert (
        "p99 not judged: the candidate had 600 answers in the step and production 0 (it needs 100 on each side)"
        in verdict.reason
    )
    assert "accuracy 0.9750 vs 0.9800" in verdict.reason
    worse = BackendStats(requests=600, p99_seconds=0.01, correct=1080, labelled=1200)  # 0.90
    assert judge(worse, idle, LIMITS, step_over=True).passed is False


def test_a_less_accurate_candidate_fails_on_online_accuracy() -> None:
    worse = BackendStats(requests=200, correct=180, labelled=200)  # 0.90, 8 points below
    verdict = judge(worse, PRODUCTION, LIMITS, step_over=True)
    assert verdict.passed is False
    assert "online accuracy 0.9000 is 0.0800 below production's 0.9800" in verdict.reason


def test_an_accuracy_drop_that_few_labels_explain_does_not_abort() -> None:
    # 57 of 60 (0.95) on a 10 % step is 3 points below production, but one image more or less moves it by
    # 1.7 points: not evidence against the candidate yet.
    few = BackendStats(requests=60, correct=57, labelled=60)
    assert drop_noise(few, PRODUCTION) > 0.02
    assert judge(few, PRODUCTION, LIMITS, step_over=True).passed is True
    # The same share of mistakes on 2,000 images is evidence.
    many = BackendStats(requests=200, correct=1900, labelled=2000)
    assert judge(many, PRODUCTION, LIMITS, step_over=True).passed is False


def test_each_of_a_rollouts_looks_at_accuracy_tests_at_its_share_of_the_false_abort_rate() -> None:
    assert accuracy_z(1) == pytest.approx(1.645, abs=1e-3)
    assert accuracy_z(3) == pytest.approx(2.128, abs=1e-3)
    with pytest.raises(ValueError, match="looks"):
        accuracy_z(0)
    # The compose smoke run's first step: a candidate identical to production (0.9002 test accuracy) drew 47
    # hard images of 60. One look at 5 % blames the candidate; the first of three looks does not.
    production = BackendStats(requests=500, correct=450, labelled=500)
    unlucky = BackendStats(requests=60, correct=47, labelled=60)
    assert judge(unlucky, production, LIMITS, step_over=True).passed is False
    assert judge(unlucky, production, LIMITS, step_over=True, looks=3).passed is True
    # A candidate really 8 points worse is still caught at the first of three looks.
    worse = BackendStats(requests=200, correct=180, labelled=200)
    assert judge(worse, PRODUCTION, LIMITS, step_over=True, looks=3).passed is False


def test_a_step_without_enough_traffic_fails_rather_than_passing_unjudged() -> None:
    verdict = judge(BackendStats(requests=5, correct=5, labelled=5), PRODUCTION, LIMITS, step_over=True)
    assert verdict.passed is False and "too little traffic" in verdict.reason


def test_without_labels_accuracy_is_said_to_be_unjudged() -> None:
    unlabelled = BackendStats(requests=200, p99_seconds=0.01)
    verdict = judge(unlabelled, PRODUCTION, LIMITS, step_over=True)
    assert verdict.passed is True and "accuracy not judged" in verdict.reason


@pytest.mark.parametrize(
    "kwargs", [{"max_error_rate": 1.5}, {"max_accuracy_drop": -0.1}, {"max_p99_ratio": 0}, {"min_requests": 0}]
)
def test_impossible_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Thresholds(**kwargs)  # type: ignore[arg-type]


def test_agreement_is_one_minus_the_total_variation_distance_of_the_predicted_digits() -> None:
    assert agreement({"3": 50, "5": 50}, {"3": 5, "5": 5}) == pytest.approx(1.0)
    assert agreement({"3": 100}, {"5": 7}) == pytest.approx(0.0)
    # Production: 3 and 5 half each; the candidate: 3 for 80 %, 5 for 20 %: 0.3 of the mass moved.
    assert agreement({"3": 50, "5": 50}, {"3": 80, "5": 20}) == pytest.approx(0.7)
    assert agreement({}, {"3": 1}) is None


def test_the_chi_squared_test_tells_a_shifted_distribution_from_sampling_noise() -> None:
    same = same_distribution_p_value({"3": 52, "5": 48}, {"3": 49, "5": 51})
    shifted = same_distribution_p_value({"3": 500, "5": 500}, {"3": 800, "5": 200})
    assert same is not None and same > 0.5
    assert shifted is not None and shifted < 1e-6
    assert same_distribution_p_value({"3": 10}, {"3": 12}) is None, "one class: nothing to compare"
