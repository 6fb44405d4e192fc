"""Queries against Prometheus's HTTP API, for a rollout's analysis and its picture.

Only `GET /api/v1/query` and `GET /api/v1/query_range` are used, so this is a few lines over `requests`
rather than a client library: the PyPI clients for Prometheus's API pull in pandas and matplotlib for the
same two calls.
"""

from __future__ import annotations

import math
from typing import Any

import requests

Samples = list[tuple[float, float]]
"""(Unix time in seconds, value) pairs."""


class PrometheusUnavailable(RuntimeError):
    """Prometheus did not answer, or refused the query (the message names the address and the query)."""


class PrometheusQuery:
    """Prometheus's query API at `url` (http://host:port)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _data(self, path: str, params: dict[str, str], expected: str) -> list[dict[str, Any]]:
        address = f"{self.url}{path}"
        try:
            answer = self.session.get(address, params=params, timeout=self.timeout)
            body = answer.json()
        except (requests.RequestException, ValueError) as err:
            raise PrometheusUnavailable(f"{address}: {err}") from err
        query = params["query"]
        if answer.status_code != 200 or body.get("status") != "success":
            raise PrometheusUnavailable(f"{address} refused {query!r}: {body.get('error', answer.status_code)}")
        if body["data"]["resultType"] != expected:
            raise PrometheusUnavailable(f"{query!r} is a {body['data']['resultType']}, not a {expected}")
        return list(body["data"]["result"])

    def vector(self, promql: str, *, by: str) -> dict[str, float]:
        """The value of each series of the instant vector `promql`, keyed by its label `by` ("" when the series
        lacks it). NaN values (a ratio of two zero rates) are left out.

        Raises PrometheusUnavailable when Prometheus cannot be reached, answers an error (a bad query, a
        timeout), or answers with a type other than a vector.
        """
        result = self._data("/api/v1/query", {"query": promql}, "vector")
        values = {series["metric"].get(by, ""): float(series["value"][1]) for series in result}
        return {key: value for key, value in values.items() if not math.isnan(value)}

    def range(self, promql: str, *, by: str, start: float, end: float, step: float) -> dict[str, Samples]:
        """The samples of each series of `promql` from `start` to `end` (Unix seconds) every `step` seconds,
        keyed by the label `by`; NaN samples left out. Raises PrometheusUnavailable as `vector` does."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        result = self._data("/api/v1/query_range", params, "matrix")
        return {
            series["metric"].get(by, ""): [(float(t), float(v)) for t, v in series["values"] if v != "NaN"]
            for series in result
        }

    def ready(self) -> bool:
        """Whether Prometheus answers /-/ready with 200."""
        try:
            return self.session.get(f"{self.url}/-/ready", timeout=self.timeout).status_code == 200
        except requests.RequestException:
            return False
