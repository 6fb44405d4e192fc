"""How long MLflow's client retries a request, once `connect` has bounded it."""

from __future__ import annotations

import os

import pytest

from mlops_sandbox.tracking import RETRY_BOUND_MARK, bound_request_retries

VARIABLES = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


@pytest.mark.parametrize(("seconds", "retries"), [(4, 3), (6, 3), (120, 7), (5000, 10)])
def test_the_fewest_retries_whose_backoff_covers_the_wait(
    monkeypatch: pytest.MonkeyPatch, seconds: float, retries: int
) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert bound_request_retries(seconds) == retries
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(retries)
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    # urllib3 sleeps 0 s, then factor x 2^(n-1) s: 2^n - 2 in all.
    assert 2**retries - 2 >= min(seconds, 2**10 - 2)


def test_mlflows_own_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    assert bound_request_retries(120) == 2
    assert "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR" not in os.environ


def test_a_bound_set_earlier_is_recomputed_not_taken_for_a_users(monkeypatch: pytest.MonkeyPatch) -> None:
    # A process that connected with a 120 s wait passes its environment on to a job that waits 4 s: the job must
    # not retry for 2 minutes (what a fault test met in CI, where an earlier test had connected in-process).
    for name in (*VARIABLES, RETRY_BOUND_MARK):
        monkeypatch.delenv(name, raising=False)
    assert bound_request_retries(120) == 7
    assert bound_request_retries(4) == 3
    # A user's value, even beside a stale mark, still wins.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    assert bound_request_retries(4) == 5
