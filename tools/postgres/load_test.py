"""How many concurrent writers a tracking server's backend store holds: a load test without training.

    python -m tools.postgres.load_test --tracking-uri http://127.0.0.1:5000 --clients 32 --points 100

Each client creates a run, logs `--points` metric points one request at a time (as a training loop
does), and registers a model version. It then counts what the server stored and prints: clients,
failures (with the first error), points logged and persisted, versions and whether they are 1..N
without gaps. Exit code 1 when anything failed or was lost.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from mlflow import MlflowClient


def one_client(client: MlflowClient, experiment_id: str, model: str, points: int) -> tuple[str, str]:
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    for step in range(points):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run_id)
    version = client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)
    return run_id, str(version.version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.postgres.load_test", description=__doc__)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--points", type=int, default=100)
    args = parser.parse_args(argv)
    client = MlflowClient(args.tracking_uri)
    tag = uuid.uuid4().hex[:8]
    experiment_id = client.create_experiment(f"load-test-{tag}")
    model = f"load_test_{tag}"
    client.create_registered_model(model)
    began = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        futures = [pool.submit(one_client, client, experiment_id, model, args.points) for _ in range(args.clients)]
    seconds = time.monotonic() - began
    errors = [f.exception() for f in futures if f.exception() is not None]
    done = [f.result() for f in futures if f.exception() is None]
    persisted = sum(len(client.get_metric_history(run_id, "loss")) for run_id, _ in done)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{model}'"))
    gapless = versions == list(range(1, len(versions) + 1))
    print(
        f"clients {args.clients}, failures {len(errors)}, points logged {len(done) * args.points} "
        f"(attempted {args.clients * args.points}), persisted {persisted}, versions {len(versions)} "
        f"{'1..' + str(len(versions)) + ' without gaps' if gapless else 'WITH GAPS ' + str(versions)}, "
        f"{seconds:.1f} s, {args.clients * args.points / seconds:.0f} points/s"
    )
    if errors:
        print(f"first error: {str(errors[0])[:500]}", file=sys.stderr)
    return 0 if not errors and gapless and persisted == len(done) * args.points else 1


if __name__ == "__main__":
    sys.exit(main())
