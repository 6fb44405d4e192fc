"""MLflow's backend-store schema: its revision, made and upgraded by MLflow's own migrations.

MLflow has no public API for this. These are the functions of `mlflow.store.db.utils` that `mlflow server`
and `mlflow db upgrade` run, most of them private. This module is the one place that calls them, so an MLflow
release that renames or changes them breaks here and in its test
(tests/unit/mlops_sandbox/test_store_schema.py), nowhere else. Callers: the tracking server's entrypoint
(services/mlflow) and the SQLite -> PostgreSQL migration (infra/ops/migrate_store).
"""

from __future__ import annotations

from mlflow.store.db import utils as db_utils
from sqlalchemy.engine import Engine


def create_engine(uri: str) -> Engine:
    """An engine on a backend store, pooled and configured as the tracking server configures its own."""
    return db_utils.create_sqlalchemy_engine(uri)


def head_revision() -> str:
    """The alembic revision that this MLflow release's schema is at, for example '7d34483879f0'."""
    return db_utils._get_latest_schema_revision()


def current_revision(engine: Engine) -> str | None:
    """The alembic revision a store is at; None for a database without MLflow's tables."""
    if not db_utils._all_tables_exist(engine):
        return None
    return db_utils._get_schema_version(engine)


def create(engine: Engine) -> None:
    """Make MLflow's tables in an empty database and stamp it with the head revision."""
    db_utils._initialize_tables(engine)


def upgrade(engine: Engine) -> None:
    """Run MLflow's alembic migrations from the store's revision to the head one (`mlflow db upgrade`)."""
    db_utils._upgrade_db(engine)
