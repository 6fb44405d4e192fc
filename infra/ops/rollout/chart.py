"""The picture of one rollout, from Prometheus: the candidate's weight, each backend's error rate and online
accuracy over time. Logged with the rollout's MLflow run (plots/rollout.png)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in containers or CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from infra.ops.rollout.metrics import PREDICTIONS, REQUESTS, growth  # noqa: E402
from mlops_sandbox.prometheus import PrometheusQuery  # noqa: E402

WINDOW = 10
"""Seconds over which the error and accuracy curves are computed: five scrapes, short enough to show a step's
edge. Counted with metrics.growth, so that a candidate's first errors show from its first scrape on."""
FAILED = f'{REQUESTS}{{outcome!="ok"}}'
CORRECT = f'{PREDICTIONS}{{correct="true"}}'
MIN_SAMPLES = 5
"""Requests (or labelled images) a backend needs in a window for its point to be drawn: at 100 % a few
stragglers reach production, and one wrong answer out of one would draw an accuracy of 0."""


def _ratio(part: str, whole: str) -> str:
    total = growth(whole, "backend", WINDOW)
    return f"({part}) / {total} and on (backend) ({total} >= {MIN_SAMPLES})"


QUERIES = {
    "weight": "max(sandbox_rollout_candidate_weight_percent)",
    # A backend without a single error has no error series: `or ... * 0` draws its rate as 0, not as nothing.
    "errors": _ratio(f"{growth(FAILED, 'backend', WINDOW)} or {growth(REQUESTS, 'backend', WINDOW)} * 0", REQUESTS),
    "accuracy": _ratio(growth(CORRECT, "backend", WINDOW), PREDICTIONS),
}
LEAD = 5.0
"""Seconds drawn before the rollout began: the traffic as it was."""


def rollout_figure(prometheus: PrometheusQuery, start: float, end: float, title: str) -> Figure:
    """Three panels sharing a time axis in seconds since `start` (Unix seconds) up to `end`: the candidate's
    weight (percent), the error rate (fraction) and the online accuracy (fraction) of each backend.

    Raises PrometheusUnavailable (mlops_sandbox.prometheus) when a query fails.
    """
    step = max(1.0, (end - start) / 300)
    begin = start - LEAD
    series = {name: prometheus.range(q, by="backend", start=begin, end=end, step=step) for name, q in QUERIES.items()}
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    labels = {"weight": "candidate weight (%)", "errors": "error rate", "accuracy": "online accuracy"}
    for ax, (name, by_backend) in zip(axes, series.items(), strict=True):
        for backend, points in sorted(by_backend.items()):
            ax.plot([t - start for t, _ in points], [v for _, v in points], label=backend or name)
        ax.set_ylabel(labels[name])
        ax.grid(alpha=0.3)
        if name != "weight":
            ax.legend(loc="best")
    axes[0].set_ylim(-5, 105)
    axes[1].set_ylim(-0.05, 1.05)
    axes[-1].set_xlabel("seconds since the rollout began")
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # log_figure draws it; pyplot need not keep it
    return fig
