"""The rollout controller's own Prometheus metrics: what it routes and what it decided, scraped while it runs."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CANDIDATE_WEIGHT = Gauge(
    "sandbox_rollout_candidate_weight_percent",
    "The share of traffic the controller routes to the candidate version, in percent",
    ["model_version"],
)
STEP_VERDICTS = Counter(
    "sandbox_rollout_step_verdicts",
    "Judged rollout steps, by candidate version and verdict (passed, failed)",
    ["model_version", "verdict"],
)
SHADOW_PERCENT = Gauge(
    "sandbox_rollout_shadow_percent",
    "The share of production's traffic the controller mirrors to the candidate version (a shadow), in percent",
    ["model_version"],
)
