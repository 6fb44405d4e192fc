"""How fast an alias move reaches serving: seconds from `set_registered_model_alias` to each endpoint answering
an inference request with the new `model_version`, for several endpoints side by side on the same moves.

    python -m tools.benchmark.follow --versions 1 2 --moves 20 \\
        --endpoint webhook=http://127.0.0.1:8080 --endpoint polling=http://127.0.0.1:8095

Moves the alias (--alias, default production) between the two versions --moves times, each endpoint
following it. After each move every endpoint is asked in its own thread, every 10 ms, to infer one image
(V2 REST) until its answer names the new version. A random pause (uniform, 0 to --pause seconds) before
each move spreads the moves over the poll cycle of an endpoint that polls. Prints each endpoint's median,
p90 and max (seconds); exits 1 when an endpoint did not serve a move within --timeout seconds.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import requests
from mlflow.tracking import MlflowClient

from mlops_sandbox.v2 import rest_request_body

BODY = rest_request_body(np.zeros((1, 1, 28, 28), dtype=np.float32))


@dataclass
class Endpoint:
    """One V2 REST endpoint, asked with plain requests: the V2 client's gevent transport is bound to one thread."""

    url: str
    model: str
    session: requests.Session = field(default_factory=requests.Session)

    def answering_version(self) -> str | None:
        """The model_version of an inference answer for one image; None when the request fails."""
        try:
            response = self.session.post(
                f"{self.url.rstrip('/')}/v2/models/{self.model}/infer",
                data=BODY,
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
        except requests.RequestException:
            return None
        return response.json().get("model_version") if response.status_code == 200 else None


def seconds_until_served(endpoint: Endpoint, version: str, since: float, timeout: float) -> float | None:
    """Seconds from `since` (time.monotonic) until `endpoint` answers with `version`; None after `timeout`."""
    while time.monotonic() - since < timeout:
        if endpoint.answering_version() == version:
            return time.monotonic() - since
        time.sleep(0.01)
    return None


def measure(
    registry: MlflowClient,
    model: str,
    alias: str,
    versions: tuple[str, str],
    endpoints: dict[str, Endpoint],
    *,
    moves: int,
    pause: float,
    timeout: float,
) -> dict[str, list[float | None]]:
    """Per endpoint label, the seconds each move took to be served (None: not within `timeout`)."""
    results: dict[str, list[float | None]] = {label: [] for label in endpoints}
    for move in range(moves):
        target = versions[move % 2]
        time.sleep(random.uniform(0, pause))
        moved = time.monotonic()
        registry.set_registered_model_alias(model, alias, target)
        with ThreadPoolExecutor(len(endpoints)) as pool:
            waits = {
                label: pool.submit(seconds_until_served, client, target, moved, timeout)
                for label, client in endpoints.items()
            }
        took = {label: wait.result() for label, wait in waits.items()}
        for label, seconds in took.items():
            results[label].append(seconds)
        print(f"move {move + 1:2}: @{alias} -> {target}: " + ", ".join(f"{k} {v}" for k, v in took.items()))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.benchmark.follow", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tracking-uri", default="http://127.0.0.1:5000")
    parser.add_argument("--model", default="pytorch_simplenn_mnist")
    parser.add_argument("--alias", default="production")
    parser.add_argument("--versions", nargs=2, required=True, metavar=("A", "B"))
    parser.add_argument("--endpoint", action="append", required=True, metavar="LABEL=URL")
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--pause", type=float, default=2.0, help="longest random pause before a move (seconds)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds an endpoint may take to serve a move")
    args = parser.parse_args(argv)
    endpoints = {}
    for item in args.endpoint:
        label, sep, url = item.partition("=")
        if not sep:
            parser.error(f"--endpoint takes LABEL=URL, got {item!r}")
        endpoints[label] = Endpoint(url, args.model)
    results = measure(
        MlflowClient(args.tracking_uri),
        args.model,
        args.alias,
        tuple(args.versions),
        endpoints,
        moves=args.moves,
        pause=args.pause,
        timeout=args.timeout,
    )
    failed = False
    for label, times in results.items():
        served = np.array([t for t in times if t is not None])
        missed = len(times) - len(served)
        failed |= missed > 0
        print(
            f"{label}: {len(times)} moves, median {np.median(served):.2f} s, p90 {np.percentile(served, 90):.2f} s, "
            f"max {served.max():.2f} s" + (f", {missed} not served within {args.timeout:g} s" if missed else "")
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
