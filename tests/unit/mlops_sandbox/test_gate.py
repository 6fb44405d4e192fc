"""The promotion gate's decision: promote when there is no production yet or the candidate is not worse."""

from __future__ import annotations

import pytest

from mlops_sandbox.gate import decide


def test_with_no_production_version_the_candidate_is_promoted() -> None:
    decision = decide("1", 0.91, None, None, tolerance=0.005, images=2000)
    assert decision.promoted and decision.reason == "no production version yet"
    assert decision.tags()["gate.production_version"] == "none"


@pytest.mark.parametrize(
    ("candidate", "production", "promoted"),
    [(0.981, 0.980, True), (0.975, 0.980, True), (0.9749, 0.980, False), (0.50, 0.98, False)],
)
def test_the_candidate_passes_when_at_most_tolerance_worse(candidate: float, production: float, promoted: bool) -> None:
    decision = decide("4", candidate, "3", production, tolerance=0.005, images=10_000)
    assert decision.promoted is promoted
    assert f"{candidate:.4f} {'>=' if promoted else '<'} production (version 3) {production:.4f}" in decision.reason
    assert "tolerance 0.005 on 10000 test images" in decision.reason


def test_the_decision_is_recorded_as_tags() -> None:
    tags = decide("4", 0.9, "3", 0.98, tolerance=0.01, images=500).tags()
    assert tags["gate.outcome"] == "rejected"
    assert (tags["gate.candidate_accuracy"], tags["gate.production_accuracy"]) == ("0.9000", "0.9800")
    assert (tags["gate.production_version"], tags["gate.tolerance"], tags["gate.images"]) == ("3", "0.01", "500")
    assert tags["gate.decided_at"]
