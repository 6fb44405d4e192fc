"""MLflow's schema functions, the private ones included, that the tracking server and the migration call.

If this fails after an MLflow upgrade, MLflow changed the functions behind `mlflow db upgrade`: adapt
mlops_sandbox/store_schema.py, the one module that calls them.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from mlflow.store.db import utils as db_utils

from mlops_sandbox import store_schema


def test_mlflow_still_has_the_private_schema_functions_we_call_with_the_same_parameters() -> None:
    expected = {
        "create_sqlalchemy_engine": ["db_uri"],
        "_get_latest_schema_revision": [],
        "_all_tables_exist": ["engine"],
        "_get_schema_version": ["engine"],
        "_initialize_tables": ["engine"],
        "_upgrade_db": ["engine"],
    }
    for name, parameters in expected.items():
        function = getattr(db_utils, name, None)
        assert callable(function), f"mlflow.store.db.utils.{name} is gone"
        assert list(inspect.signature(function).parameters)[: len(parameters)] == parameters, name


def test_a_new_store_is_created_at_the_head_revision_and_upgrading_it_is_a_no_op(tmp_path: Path) -> None:
    engine = store_schema.create_engine(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        assert store_schema.current_revision(engine) is None
        store_schema.create(engine)
        head = store_schema.head_revision()
        assert len(head) == 12 and store_schema.current_revision(engine) == head
        store_schema.upgrade(engine)
        assert store_schema.current_revision(engine) == head
    finally:
        engine.dispose()
