"""The generator's Prometheus metrics, and the same totals kept for its summary (stdout and JSON).

    sandbox_traffic_requests_total{protocol, backend, model_version, outcome}
    sandbox_traffic_predictions_total{protocol, backend, model_version, correct}     one per image
    sandbox_traffic_request_duration_seconds{protocol, backend, model_version}     answered requests
    sandbox_traffic_skipped_total                                                 not sent on time

backend: the router's x-sandbox-backend (production, candidate), `direct` without a router, `unknown` when
nothing answered. model_version: the registry version that answered, "" when the answer names none.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.traffic.generator import ScheduleResult
from services.traffic.senders import OUTCOMES, Answer

NAMESPACE, SUBSYSTEM = "sandbox", "traffic"
# From a fast answer on loopback (about 1 ms) to the slowest one worth telling apart (2 s).
DURATION_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.0)


class Recorder:
    """Counts answers into a registry of its own (served by prometheus_client's HTTP server) and into totals
    per (backend, model_version) for the summary. Thread-safe."""

    def __init__(self, protocol: str, registry: CollectorRegistry | None = None) -> None:
        self.protocol = protocol
        self.registry = registry or CollectorRegistry()
        common: dict[str, Any] = {"namespace": NAMESPACE, "subsystem": SUBSYSTEM, "registry": self.registry}
        self.requests = Counter(
            "requests",
            "Requests sent, by the backend and model version that answered and by outcome "
            "(ok, client_error, server_error, transport_error)",
            ["protocol", "backend", "model_version", "outcome"],
            **common,
        )
        self.predictions = Counter(
            "predictions",
            "Images predicted in ok answers, by whether the predicted digit is the true label",
            ["protocol", "backend", "model_version", "correct"],
            **common,
        )
        self.duration = Histogram(
            "request_duration_seconds",
            "Time from sending a request to its whole answer, for requests that got one (seconds)",
            ["protocol", "backend", "model_version"],
            buckets=DURATION_BUCKETS,
            **common,
        )
        self.skipped = Counter("skipped", "Requests not sent because they could not go out on time", **common)
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], Tally[str]] = {}
        self._first_error: dict[str, str] = {}

    def record(self, answer: Answer, labels: np.ndarray) -> None:
        """Count one answer to a request whose images have the true digits `labels`, int64 (N,)."""
        key = {"protocol": self.protocol, "backend": answer.backend, "model_version": answer.model_version}
        self.requests.labels(**key, outcome=answer.outcome).inc()
        if answer.seconds is not None:
            self.duration.labels(**key).observe(answer.seconds)
        correct = 0
        if answer.digits is not None:
            correct = int(np.count_nonzero(answer.digits == labels))
            self.predictions.labels(**key, correct="true").inc(correct)
            self.predictions.labels(**key, correct="false").inc(len(labels) - correct)
        with self._lock:
            tally = self._totals.setdefault((answer.backend, answer.model_version), Tally())
            tally[answer.outcome] += 1
            if answer.digits is not None:
                tally["images"] += len(labels)
                tally["correct"] += correct
            if answer.detail:
                self._first_error.setdefault(answer.outcome, answer.detail)

    def skip(self) -> None:
        """Count one request that was due but not sent."""
        self.skipped.inc()

    @property
    def first_errors(self) -> dict[str, str]:
        """The first failure seen of each outcome, for the log."""
        with self._lock:
            return dict(self._first_error)

    def summary(self, result: ScheduleResult, **run: Any) -> dict[str, Any]:
        """Totals of the run as JSON-ready data: `run` (target, rate, ...), the schedule's counts, each outcome's
        count, and per backend and model version the requests by outcome, images predicted, correct ones and
        the accuracy (None when no image was predicted)."""
        with self._lock:
            totals = {key: Tally(tally) for key, tally in sorted(self._totals.items())}
        outcomes = {outcome: sum(tally[outcome] for tally in totals.values()) for outcome in OUTCOMES}
        backends = [
            {
                "backend": backend,
                "model_version": version,
                "requests": {outcome: tally[outcome] for outcome in OUTCOMES},
                "images": tally["images"],
                "correct": tally["correct"],
                "accuracy": tally["correct"] / tally["images"] if tally["images"] else None,
            }
            for (backend, version), tally in totals.items()
        ]
        return {
            **run,
            "protocol": self.protocol,
            "scheduled": result.scheduled,
            "sent": result.sent,
            "skipped": result.skipped,
            "seconds": round(result.seconds, 3),
            "stopped": result.stopped,
            "outcomes": outcomes,
            "backends": backends,
        }


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the log: how many requests, at what rate, their outcomes, and each backend's accuracy."""
    outcomes = ", ".join(f"{outcome} {count}" for outcome, count in summary["outcomes"].items())
    parts = [
        f"{entry['backend']} v{entry['model_version'] or '?'}: "
        + (f"accuracy {entry['accuracy']:.4f} on {entry['images']} images" if entry["images"] else "no prediction")
        for entry in summary["backends"]
    ]
    rate = summary["sent"] / summary["seconds"] if summary["seconds"] else 0.0
    return (
        f"traffic: {summary['sent']} of {summary['scheduled']} requests sent in {summary['seconds']:.1f} s "
        f"({rate:.1f}/s) to {summary['target']}: {outcomes}, skipped {summary['skipped']}"
        + ("; " + "; ".join(parts) if parts else "")
        + (" (stopped early)" if summary["stopped"] else "")
    )
