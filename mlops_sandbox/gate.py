"""Gated promotion (champion/challenger): promote a candidate only if it is not worse than production.

Both versions are measured the same way, on the same held-out MNIST test images, through their serving
endpoints: the candidate through the staging endpoint, production through the production endpoint. The
decision is recorded on the candidate as `gate.*` tags; a rejected candidate stays @staging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from mlflow.tracking import MlflowClient

from mlops_sandbox import registry
from mlops_sandbox.v2 import InferenceError, V2Client
from mlops_sandbox.waiting import DependencyUnavailable, NotReadyYet, wait_for

SERVE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class GateDecision:
    """The outcome of one gate: both accuracies (fractions of `images` test images), and why."""

    candidate: str
    candidate_accuracy: float
    production: str | None
    production_accuracy: float | None
    tolerance: float
    images: int
    promoted: bool
    reason: str

    def tags(self) -> dict[str, str]:
        """The decision as the candidate version's `gate.*` tags in the registry."""
        return {
            "gate.decided_at": registry.now(),
            "gate.outcome": "promoted" if self.promoted else "rejected",
            "gate.reason": self.reason,
            "gate.candidate_accuracy": f"{self.candidate_accuracy:.4f}",
            "gate.production_version": self.production or "none",
            "gate.production_accuracy": (
                f"{self.production_accuracy:.4f}" if self.production_accuracy is not None else "none"
            ),
            "gate.tolerance": f"{self.tolerance:g}",
            "gate.images": str(self.images),
        }


def served_version(url: str, model_name: str) -> str | None:
    """The registry version the endpoint at `url` serves now (V2 model metadata); None when it does not answer."""
    return V2Client(url, model_name).served_version()


def wait_until_served(url: str, model_name: str, version: str, timeout: float = SERVE_WAIT_SECONDS) -> float:
    """Seconds until the endpoint at `url` serves `version`, polled every 0.2 s.

    Raises InferenceError when it still serves another version after `timeout` seconds.
    """
    client = V2Client(url, model_name)
    began = time.monotonic()

    def serves() -> None:
        if (served := client.served_version()) != version:
            raise NotReadyYet(f"it serves version {served}")

    try:
        wait_for(serves, service=f"version {version} of {model_name}", address=url, timeout=timeout, interval=0.2)
    except DependencyUnavailable as err:
        raise InferenceError(str(err)) from None
    return time.monotonic() - began


def endpoint_accuracy(url: str, model_name: str, version: str, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of `version` as served at `url`; every answer must come from that version."""
    wait_until_served(url, model_name, version)
    client = V2Client(url, model_name)
    correct = 0
    for start in range(0, len(images), 500):
        prediction = client.infer(images[start : start + 500])
        if prediction.model_version != version:
            raise InferenceError(f"{url} answered with version {prediction.model_version} while measuring {version}")
        correct += int((prediction.digits == labels[start : start + 500]).sum())
    return correct / len(images)


def decide(
    candidate: str,
    candidate_accuracy: float,
    production: str | None,
    production_accuracy: float | None,
    tolerance: float,
    images: int,
) -> GateDecision:
    """Promote when there is no production version yet, or when the candidate's accuracy is at least
    production's minus `tolerance` (both fractions in [0, 1], measured on the same `images` test images)."""
    if production is None or production_accuracy is None:
        return GateDecision(
            candidate, candidate_accuracy, None, None, tolerance, images, True, "no production version yet"
        )
    # Rounded so that a candidate exactly `tolerance` worse passes, whatever the float arithmetic says.
    passed = round(candidate_accuracy - production_accuracy + tolerance, 9) >= 0
    reason = (
        f"candidate accuracy {candidate_accuracy:.4f} {'>=' if passed else '<'} production (version {production}) "
        f"{production_accuracy:.4f} - tolerance {tolerance:g} on {images} test images"
    )
    return GateDecision(
        candidate, candidate_accuracy, production, production_accuracy, tolerance, images, passed, reason
    )


def gate_and_promote(
    client: MlflowClient,
    name: str,
    candidate: str,
    *,
    staging_url: str,
    production_url: str,
    images: np.ndarray,
    labels: np.ndarray,
    tolerance: float,
) -> GateDecision:
    """Stage `candidate`, compare it with production, and promote it only if it passes. Tags record why."""
    if _alias_target(client, name, "staging") != candidate:
        registry.promote(client, name, candidate, "staging")
    candidate_accuracy = endpoint_accuracy(staging_url, name, candidate, images, labels)
    production = _alias_target(client, name, "production")
    production_accuracy = (
        endpoint_accuracy(production_url, name, production, images, labels) if production is not None else None
    )
    decision = decide(candidate, candidate_accuracy, production, production_accuracy, tolerance, len(images))
    for key, value in decision.tags().items():
        client.set_model_version_tag(name, candidate, key, value)
    if decision.promoted:
        registry.promote(client, name, candidate, "production")
    return decision


def _alias_target(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version `alias` points at, None when it is not set (a registry error is raised, not taken as unset)."""
    target = client.get_registered_model(name).aliases.get(alias)
    return str(target) if target is not None else None
