"""How long MLflow's client retries a request, once `connect` has bounded it."""

from __future__ import annotations

import os

import pytest

from mlops_sandbox.tracking import bound_request_retries

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
