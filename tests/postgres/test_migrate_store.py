"""`python -m infra.ops.migrate_store` on a store made by real training runs: three versions, aliases, stages,
a promotion and a rollback. The copy must verify all equal, and MLflow on PostgreSQL must show the same
runs, metric histories, lineage and registry as MLflow on the SQLite original, with artifacts still
loadable from where they were."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
import sqlalchemy
from mlflow import MlflowClient

from tests.support import TRACKING_PYTHON, logged_model_id, module_env, run_module, tracking_mlflow, tracking_server
from tools.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

MODEL = "pytorch_simplenn_mnist"
TRAIN_ARGS = ("--train-limit", "1000", "--epochs", "2", "--hidden-sizes", "32", "--log-every-steps", "4")


@dataclass(frozen=True)
class Store:
    db: Path
    artifacts: Path
    run_ids: list[str]
    seen: dict[str, Any]
    """What a user sees through the tracking server on the SQLite store (`snapshot`): the clients' MLflow cannot
    open the server's store directly, whose schema is the server's release's."""

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.db}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Iterator[Store]:
    """A SQLite store filled through the tracking server by the project's own training and registry CLI."""
    root = tmp_path_factory.mktemp("sqlite-store")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = module_env(
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{root / 'mlflow.db'}",
        MLFLOW_ARTIFACTS_DESTINATION=str(root / "artifacts"),
        MLFLOW_PORT=str(port),
    )
    # System metrics are sampled by wall-clock time, so their count varies from run to run; without them
    # the number of metric points below is exact.
    client_env = module_env(
        MLFLOW_TRACKING_URI=url,
        SANDBOX_MNIST_ROOT=str(mnist_root),
        OMP_NUM_THREADS="1",
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false",
    )
    run_ids = []
    with tracking_server(env, root, f"{url}/health"):
        for seed in range(3):
            out = root / f"train-{seed}.json"
            trained = run_module(
                "training.train", *TRAIN_ARGS, "--seed", str(seed), "--output-json", str(out), env=client_env
            )
            assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
            run_ids.append(json.loads(out.read_text())["run_id"])
        for step in (("promote", "1", "--to", "production"), ("promote", "2", "--to", "production"), ("rollback",)):
            done = run_module("infra.ops.registry", *step, env=client_env)
            assert done.returncode == 0, done.stderr
        client = MlflowClient(url)
        experiment = client.get_run(run_ids[0]).info.experiment_id
        client.set_experiment_tag(experiment, "team", "vision")
        client.set_registered_model_tag(MODEL, "owner", "mlops")
        seen = snapshot(client, run_ids)
    yield Store(root / "mlflow.db", root / "artifacts", run_ids, seen)


def migrate(store: Store, target: str, *args: str) -> Any:
    return run_module(
        "infra.ops.migrate_store",
        "--source",
        store.uri,
        "--target",
        target,
        *args,
        env=module_env(),
        python=TRACKING_PYTHON,
    )


def snapshot(client: MlflowClient, run_ids: list[str]) -> dict[str, Any]:
    """What a user sees through MLflow: experiments, runs with every metric point, registry, lineage."""
    experiments = sorted(
        (e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage, dict(e.tags))
        for e in client.search_experiments()
    )
    runs = {}
    for run_id in run_ids:
        run = client.get_run(run_id)
        runs[run_id] = {
            "experiment": run.info.experiment_id,
            "artifact_uri": run.info.artifact_uri,
            "times": (run.info.start_time, run.info.end_time, run.info.status),
            "params": run.data.params,
            "tags": run.data.tags,
            "history": {
                key: [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]
                for key in run.data.metrics
            },
            "inputs": sorted(
                (i.dataset.name, i.dataset.digest, i.dataset.source, tuple((t.key, t.value) for t in i.tags))
                for i in run.inputs.dataset_inputs
            ),
        }
    model = client.get_registered_model(MODEL)
    versions = [
        (str(v.version), v.run_id, v.source, v.current_stage, v.description, v.tags, v.model_id)
        for v in client.search_model_versions(f"name = '{MODEL}'")
    ]
    logged = sorted(
        (m.model_id, m.source_run_id, m.artifact_location, tuple(sorted(m.params.items())))
        for m in client.search_logged_models(experiment_ids=[e[0] for e in experiments])
    )
    return {
        "experiments": experiments,
        "runs": runs,
        "model": (model.description, model.tags, {alias: str(v) for alias, v in model.aliases.items()}),
        "versions": sorted(versions),
        "logged_models": logged,
    }


@pytest.mark.timeout(600)
def test_migration_round_trips_a_trained_store(store: Store, postgres_uri: str, tmp_path: Path) -> None:
    before = store.seen
    began = time.monotonic()
    result = migrate(store, postgres_uri)
    seconds = time.monotonic() - began
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    print(f"\nmigration of the test store: {seconds:.1f} s\n{result.stdout}")
    report = result.stdout[result.stdout.index("table ") :]
    rows = [line.split() for line in report.splitlines()[1:] if line and not line.startswith("verified")]
    assert rows and all(row[-1] == "equal" for row in rows)
    counts = {row[0]: int(row[1]) for row in rows}
    assert counts["model_versions"] == 3 and counts["runs"] == 3 and counts["registered_model_aliases"] >= 2
    # Full history: 4 epoch metrics x 2 epochs + 2 test metrics + batch loss every 4 of 32 steps, per run.
    assert counts["metrics"] == 3 * (4 * 2 + 2 + 8)
    assert "all equal" in result.stdout

    # The same store, seen through MLflow on PostgreSQL with the same artifact destination.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = module_env(
        MLFLOW_BACKEND_STORE_URI=postgres_uri, MLFLOW_ARTIFACTS_DESTINATION=str(store.artifacts), MLFLOW_PORT=str(port)
    )
    with tracking_server(env, tmp_path, f"{url}/health"):
        client = MlflowClient(url)
        after = snapshot(client, store.run_ids)
        assert after == before
        production = client.get_model_version_by_alias(MODEL, "production")
        assert production.version == "1" and production.run_id == store.run_ids[0]
        assert client.get_model_version_by_alias(MODEL, "staging").version == "3"
        assert [v[3] for v in after["versions"]] == ["Production", "Archived", "Staging"]

        # Artifacts stayed where they were and still load: a plot and the production model itself.
        plots = client.download_artifacts(store.run_ids[0], "plots", str(tmp_path / "plots"))
        assert (Path(plots) / "curves.png").stat().st_size > 0
        mlflow.set_tracking_uri(url)
        model = mlflow.pytorch.load_model(f"models:/{MODEL}@production")
        trained = after["runs"][store.run_ids[0]]["params"]
        assert sum(p.numel() for p in model.parameters()) == int(trained["parameters"])

        # New ids continue after the copied ones.
        highest = max(int(e[0]) for e in after["experiments"])
        assert int(client.create_experiment("after-migration")) == highest + 1
        assert production.source is not None
        new_version = client.create_model_version(
            MODEL, production.source, run_id=production.run_id, model_id=logged_model_id(production.source)
        )
        assert new_version.version == "4"


@pytest.mark.timeout(300)
def test_dry_run_writes_nothing(store: Store, postgres_uri: str) -> None:
    result = migrate(store, postgres_uri, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing was written" in result.stdout
    assert "model_versions" in result.stdout and "empty database" in result.stdout
    engine = sqlalchemy.create_engine(postgres_uri)
    assert sqlalchemy.inspect(engine).get_table_names() == []
    engine.dispose()


@pytest.mark.timeout(300)
def test_refuses_a_non_empty_target_unless_forced(store: Store, postgres_uri: str) -> None:
    # A store that MLflow itself (the server's release) just created (schema, Default experiment) counts as empty.
    tracking_mlflow(
        "import sys; from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as S; "
        "S(sys.argv[1], '/tmp/unused-artifacts').engine.dispose()",
        postgres_uri,
    )
    first = migrate(store, postgres_uri)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    again = migrate(store, postgres_uri)
    assert again.returncode == 2
    assert "is not empty (experiments 1, " in again.stderr and "--force" in again.stderr
    assert "***" in again.stderr and not re.search(r"^copied \d+ rows", again.stdout, re.MULTILINE)

    forced = migrate(store, postgres_uri, "--force")
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-3000:]
    assert "all equal" in forced.stdout


@pytest.mark.timeout(300)
def test_verification_reports_a_lost_metric_point(store: Store, postgres_uri: str) -> None:
    assert migrate(store, postgres_uri).returncode == 0
    engine = sqlalchemy.create_engine(postgres_uri)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM metrics WHERE ctid = (SELECT ctid FROM metrics LIMIT 1)"))
    engine.dispose()
    result = migrate(store, postgres_uri, "--verify-only")
    assert result.returncode == 1
    metrics_line = next(line for line in result.stdout.splitlines() if line.startswith("metrics "))
    assert metrics_line.endswith("DIFFERENT")
    assert "1 DIFFER: metrics" in result.stdout


@pytest.mark.timeout(120)
def test_refuses_a_source_at_another_schema_revision(store: Store, postgres_uri: str, tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(store.db, old)
    with sqlite3.connect(old) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0584bdc529eb'")
    conn.close()
    result = run_module(
        "infra.ops.migrate_store",
        "--source",
        f"sqlite:///{old}",
        "--target",
        postgres_uri,
        env=module_env(),
        python=TRACKING_PYTHON,
    )
    assert result.returncode == 2
    assert "schema revision 0584bdc529eb" in result.stderr and f"mlflow db upgrade sqlite:///{old}" in result.stderr
